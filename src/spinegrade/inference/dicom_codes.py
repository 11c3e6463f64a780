"""The coded concepts of spinegrade's DICOM Structured Reports, said once.

Standard codes where DICOM PS3.16 has them (every SCT and DCM code below is in the DICOM content
mapping resource, as shipped in pydicom's concept dictionary, except `76107001`, which is the
SNOMED CT concept "Spinal stenosis (disorder)"):

- finding: spinal canal stenosis = (76107001, SCT, "Spinal stenosis");
- finding site: the disc levels = (243920003 ... 243927000, SCT, "Level of L1/L2 intervertebral
  disc" ...) of CID 1003 "Anatomical Reference Basis - Spine", with laterality (7771000, SCT,
  "Left") / (24028007, SCT, "Right") for the lateral conditions;
- severity: (246112005, SCT, "Severity") = (6736007, SCT, "Moderate") | (24484000, SCT, "Severe")
  (CID 3716);
- probabilities: (122157, DCM, "Probability"), unit ({probability}, UCUM, "probability"): a UCUM
  annotation, dimensionless (unity) like `1`, that says what the number is; each of the three is
  post-coordinated with the severity class it belongs to (HAS CONCEPT MOD Severity).

Private codes, coding scheme designator `99SPINEGRADE` ("99" marks a private scheme, PS3.3 8.2),
only where no standard code could be found and checked: neural foraminal narrowing and
subarticular (lateral recess) stenosis as findings, the class "Normal/Mild" (the challenge merges
two grades), the localisation confidence, the folds' spread, and the processing flags.
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.coding import Code

from spinegrade.constants import LEVELS, SEVERITIES

PRIVATE_SCHEME = "99SPINEGRADE"


def coding_scheme() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification item that declares `99SPINEGRADE` in a document."""
    return CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME,
        name="spinegrade codes",
        responsible_organization="the spinegrade project",
    )


def _private(value: str, meaning: str) -> Code:
    return Code(value, PRIVATE_SCHEME, meaning)


#: The finding of each condition (left/right share one finding; the side is the site's laterality).
CONDITION_CODES: dict[str, Code] = {
    "spinal_canal_stenosis": Code("76107001", "SCT", "Spinal stenosis"),
    "left_neural_foraminal_narrowing": _private("FORAMINAL", "Neural foraminal narrowing"),
    "right_neural_foraminal_narrowing": _private("FORAMINAL", "Neural foraminal narrowing"),
    "left_subarticular_stenosis": _private(
        "SUBARTICULAR", "Subarticular (lateral recess) stenosis"
    ),
    "right_subarticular_stenosis": _private(
        "SUBARTICULAR", "Subarticular (lateral recess) stenosis"
    ),
}
LEVEL_CODES: dict[str, Code] = dict(
    zip(
        LEVELS,
        (
            Code("243920003", "SCT", "Level of L1/L2 intervertebral disc"),
            Code("243921004", "SCT", "Level of L2/L3 intervertebral disc"),
            Code("243922006", "SCT", "Level of L3/L4 intervertebral disc"),
            Code("243923001", "SCT", "Level of L4/L5 intervertebral disc"),
            Code("243927000", "SCT", "Level of L5/S1 intervertebral disc"),
        ),
    )
)
LATERALITY_CODES: dict[str, Code] = {
    "left": Code("7771000", "SCT", "Left"),
    "right": Code("24028007", "SCT", "Right"),
}
SEVERITY = Code("246112005", "SCT", "Severity")
SEVERITY_CODES: dict[str, Code] = dict(
    zip(
        SEVERITIES,
        (
            _private("NORMAL_MILD", "Normal/Mild"),
            Code("6736007", "SCT", "Moderate"),
            Code("24484000", "SCT", "Severe"),
        ),
    )
)
PROBABILITY = Code("122157", "DCM", "Probability")
PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")
CONFIDENCE = _private("LOC_CONFIDENCE", "Localisation confidence (heatmap peak)")
NO_UNITS = Code("1", "UCUM", "no units")
SPREAD = _private("FOLD_SPREAD", "Largest distance of a fold's point from the one reported")
MILLIMETRE = Code("mm", "UCUM", "millimeter")
FLAG = _private("FLAG", "Processing flag")
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")


def flag_code(flag: str) -> Code:
    """The code of a `predictions.json` flag (`cv.ensemble.FLAG_*`): `missing_series` ->
    (MISSING_SERIES, 99SPINEGRADE, "missing series")."""
    return _private(flag.upper(), flag.replace("_", " "))


def laterality(condition: str) -> Code | None:
    """Left/Right of a lateral condition (`left_...`, `right_...`), None for the spinal canal."""
    side = condition.split("_", 1)[0]
    return LATERALITY_CODES.get(side)


__all__ = [
    "CONDITION_CODES",
    "CONFIDENCE",
    "FLAG",
    "IMAGING_PROCEDURE",
    "LATERALITY_CODES",
    "LEVEL_CODES",
    "MILLIMETRE",
    "NO_UNITS",
    "PRIVATE_SCHEME",
    "PROBABILITY",
    "PROBABILITY_UNIT",
    "SEVERITY",
    "SEVERITY_CODES",
    "SPREAD",
    "coding_scheme",
    "flag_code",
    "laterality",
]
