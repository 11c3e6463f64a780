"""The SR's coded concepts: complete, within the DICOM value lengths, and (standard ones) the codes
DICOM's content mapping resource defines, with its meanings."""

from __future__ import annotations

import re

from pydicom.sr._concepts_dict import concepts

from spinegrade.constants import CONDITIONS, LEVELS, SEVERITIES
from spinegrade.cv.ensemble import FLAG_TEXT
from spinegrade.inference import dicom_codes as dc

#: Standard codes that are not in DICOM PS3.16 (see the module docstring of dicom_codes).
NOT_IN_DICOM = {("76107001", "SCT")}


def _all_codes() -> list:
    single = [
        dc.SEVERITY,
        dc.PROBABILITY,
        dc.PROBABILITY_UNIT,
        dc.CONFIDENCE,
        dc.NO_UNITS,
        dc.SPREAD,
        dc.MILLIMETRE,
        dc.FLAG,
        dc.IMAGING_PROCEDURE,
    ]
    maps = [dc.CONDITION_CODES, dc.LEVEL_CODES, dc.LATERALITY_CODES, dc.SEVERITY_CODES]
    return single + [c for m in maps for c in m.values()] + [dc.flag_code(f) for f in FLAG_TEXT]


def test_every_target_and_flag_has_a_code_that_fits_the_vrs() -> None:
    assert set(dc.CONDITION_CODES) == set(CONDITIONS) and set(dc.LEVEL_CODES) == set(LEVELS)
    assert set(dc.SEVERITY_CODES) == set(SEVERITIES)
    flags = [dc.flag_code(f).value for f in FLAG_TEXT]
    assert len(set(flags)) == len(flags) == len(FLAG_TEXT)
    for code in _all_codes():
        assert 0 < len(code.value) <= 16 and len(code.scheme_designator) <= 16, code  # SH
        assert 0 < len(code.meaning) <= 64, code  # LO


def test_standard_codes_are_dicoms_with_its_meanings() -> None:
    for code in _all_codes():
        if (
            code.scheme_designator not in ("SCT", "DCM")
            or (code.value, code.scheme_designator) in NOT_IN_DICOM
        ):
            continue
        meanings = {
            re.sub(r"\s*\((attribute|body structure|qualifier value)\)$", "", m).lower()
            for entry in concepts[code.scheme_designator].values()
            for value, (m, _) in entry.items()
            if value == code.value
        }  # SNOMED's tag aside
        assert code.meaning.lower() in meanings, (code, meanings)


def test_laterality_follows_the_condition_name() -> None:
    assert dc.laterality("spinal_canal_stenosis") is None
    assert dc.laterality("left_subarticular_stenosis") == dc.LATERALITY_CODES["left"]
    assert dc.laterality("right_neural_foraminal_narrowing").value == "24028007"
