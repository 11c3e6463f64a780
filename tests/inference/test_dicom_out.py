"""`predict --dicom-out`: the SR and overlay images of each study, read back with pydicom and
highdicom and checked against the submission, predictions.json and the source files; validated
with dciodvfy (dicom3tools) and dsrdump (dcmtk) where they are installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage
from typer.testing import CliRunner

from spinegrade.cli import app
from spinegrade.constants import SEVERITIES
from spinegrade.cv.ensemble import FLAG_NOT_LOCATED
from spinegrade.inference import dicom_codes as dc
from spinegrade.inference.dicom_out import BANNER_PX, STUDY_ATTRIBUTES, run_provenance

from .conftest import copy_study, read_findings

RICH, PLAIN, CORRUPT = 900010, 900011, 900012  # study folders of the batch
PATIENT = dict(
    PatientName="Doe^Jane",
    PatientID="P-0042",
    PatientBirthDate="19500102",
    PatientSex="F",
    StudyDate="20240301",
    StudyTime="101500",
    AccessionNumber="ACC-7",
    ReferringPhysicianName="House^Gregory",
    StudyID="S-12",
    StudyDescription="MR LUMBAR SPINE",
)


@pytest.fixture(scope="module")
def batch(tiny: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`spinegrade predict --dicom-out` (one worker process) on an images folder holding the tiny
    run's complete study twice (with full patient attributes; as generated, without most of them)
    and a corrupt study."""
    root = tmp_path_factory.mktemp("dicom_out")
    images, out = root / "images", root / "out"
    source = tiny["data"] / "train_images" / str(tiny["complete"])
    copy_study(source, images / str(RICH), "rich", **PATIENT)
    shutil.copytree(source, images / str(PLAIN))
    (images / str(CORRUPT) / "7").mkdir(parents=True)
    (images / str(CORRUPT) / "7" / "1.dcm").write_bytes(b"not a dicom file " * 20)
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(tiny["run"]),
            str(images),
            "--out",
            str(out),
            "--dicom-out",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    findings = {
        s: read_findings(out / "studies" / str(s) / "dicom" / "sr.dcm") for s in (RICH, PLAIN)
    }
    return {"images": images, "out": out, "run": tiny["run"], "findings": findings}


def _record(batch: dict[str, Any], study: int) -> dict[str, Any]:
    return json.loads((batch["out"] / "studies" / str(study) / "predictions.json").read_text())


def _dicom(batch: dict[str, Any], study: int, name: str) -> Path:
    return batch["out"] / "studies" / str(study) / "dicom" / name


@pytest.mark.parametrize("study", [RICH, PLAIN])
def test_sr_findings_equal_the_submission_and_predictions(
    batch: dict[str, Any], study: int
) -> None:
    findings = batch["findings"][study]
    record = _record(batch, study)
    sub = pd.read_csv(batch["out"] / "submission.csv").set_index("row_id")
    assert (
        sorted(findings) == sorted(t["row_id"] for t in record["targets"]) and len(findings) == 25
    )
    for t in record["targets"]:
        f = findings[t["row_id"]]
        row = sub.loc[t["row_id"], list(SEVERITIES)].to_numpy(dtype=float)
        assert f.severity == SEVERITIES[int(np.argmax(row))] == t["most_likely"]
        probs = np.array([f.probabilities[s] for s in SEVERITIES])
        np.testing.assert_allclose(probs, row, rtol=1e-5)  # the submission prints 6 digits
        np.testing.assert_allclose(probs, [t["probabilities"][s] for s in SEVERITIES], rtol=1e-12)
        assert f.finding == (
            dc.CONDITION_CODES[t["condition"]].value,
            dc.CONDITION_CODES[t["condition"]].scheme_designator,
        )
        assert f.site == (dc.LEVEL_CODES[t["level"]].value, "SCT")
        side = dc.laterality(t["condition"])
        assert f.laterality == (None if side is None else side.value)
        assert f.flags == [dc.flag_code(x).value for x in t["flags"]]


def test_every_point_is_on_the_instance_predictions_json_names(batch: dict[str, Any]) -> None:
    """Each SCOORD: the graded pixel + 0.5 (DICOM image coordinates), on the source file whose
    series and InstanceNumber predictions.json names; unlocated targets have no region."""
    findings = batch["findings"][RICH]
    files = {}
    for path in (batch["images"] / str(RICH)).rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        files[(int(path.parent.name), int(ds.InstanceNumber))] = ds
    located = 0
    for t in _record(batch, RICH)["targets"]:
        f = findings[t["row_id"]]
        if t["series_id"] is None:
            assert f.point is None and FLAG_NOT_LOCATED in t["flags"]
            continue
        located += 1
        source = files[(t["series_id"], t["instance_number"])]
        assert (f.sop_instance_uid, f.sop_class_uid) == (source.SOPInstanceUID, source.SOPClassUID)
        np.testing.assert_allclose(
            f.point, [t["pixel"]["x"] + 0.5, t["pixel"]["y"] + 0.5], atol=1e-4
        )
    assert located >= 15  # every sagittal target (see tests/test_inference.py)


def test_patient_and_study_are_copied_never_invented(batch: dict[str, Any]) -> None:
    sources = {
        s: pydicom.dcmread(next((batch["images"] / str(s)).rglob("*.dcm"))) for s in (RICH, PLAIN)
    }
    series_uids = set()
    for study, source in sources.items():
        objects = [pydicom.dcmread(p) for p in sorted(_dicom(batch, study, "").glob("*.dcm"))]
        assert [o.SOPClassUID for o in objects].count(ComprehensiveSRStorage) == 1
        for ds in objects:
            assert (
                ds.StudyInstanceUID == source.StudyInstanceUID and ds.Manufacturer == "spinegrade"
            )
            for keyword in STUDY_ATTRIBUTES:
                assert keyword in ds and ds[keyword].value == source.get(keyword, ds[keyword].value)
                if (
                    keyword not in source
                ):  # absent in the source: present and empty, as type 2 allows
                    assert ds[keyword].value in ("", None), keyword
            series_uids.add(ds.SeriesInstanceUID)
        assert source.SeriesInstanceUID not in series_uids
    rich = pydicom.dcmread(_dicom(batch, RICH, "sr.dcm"))
    assert (str(rich.PatientName), rich.PatientBirthDate, rich.AccessionNumber) == (
        "Doe^Jane",
        "19500102",
        "ACC-7",
    )
    assert rich.StudyDescription == "MR LUMBAR SPINE"  # the rest of the study module too
    assert len(series_uids) == 4  # an SR series and an overlay series per study, all new


def test_overlays_are_the_report_pictures_marked_not_for_diagnosis(batch: dict[str, Any]) -> None:
    folder = batch["out"] / "studies" / str(RICH)
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        ds = pydicom.dcmread(folder / "dicom" / f"overlay_{png.stem}.dcm")
        assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.Modality == "OT"
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"] and ds.BurnedInAnnotation == "YES"
        assert (
            "not for diagnostic use" in ds.ImageComments
            and "not for diagnostic use" in ds.SeriesDescription
        )
        with Image.open(png) as im:
            rgb = np.asarray(im.convert("RGB"))
        assert ds.pixel_array.shape == (rgb.shape[0] + BANNER_PX, rgb.shape[1], 3)
        np.testing.assert_array_equal(ds.pixel_array[: rgb.shape[0]], rgb)  # the picture, unchanged
        assert ds.pixel_array[rgb.shape[0] :].max() == 255  # the banner's white text


def test_a_failed_study_gets_no_sr_and_says_so(batch: dict[str, Any]) -> None:
    record = _record(batch, CORRUPT)
    assert record["status"] == "failed" and record["dicom"]["files"] == {}
    assert "no DICOM SR" in record["dicom"]["reason"]
    assert not _dicom(batch, CORRUPT, "").exists()
    errors = pd.read_csv(batch["out"] / "errors.csv")
    assert errors.study_id.tolist() == [CORRUPT]
    listed = _record(batch, RICH)["dicom"]["files"]
    assert sorted(listed) == sorted(
        f"dicom/{p.name}" for p in _dicom(batch, RICH, "").glob("*.dcm")
    )
    for name, uid in listed.items():
        assert pydicom.dcmread(_dicom(batch, RICH, Path(name).name)).SOPInstanceUID == uid


def test_dciodvfy_finds_no_error(batch: dict[str, Any]) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip(
            "dciodvfy (Debian dicom3tools) is not installed: bash scripts/system-packages.sh"
        )
    files = sorted(_dicom(batch, RICH, "").glob("*.dcm")) + sorted(
        _dicom(batch, PLAIN, "").glob("*.dcm")
    )
    assert len(files) == 8
    for path in files:
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = (proc.stdout + proc.stderr).splitlines()
        assert lines and lines[0] != "", path
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_dsrdump_reads_the_sr(batch: dict[str, Any]) -> None:
    if shutil.which("dsrdump") is None:
        pytest.skip("dsrdump (Debian dcmtk) is not installed: bash scripts/system-packages.sh")
    proc = subprocess.run(
        ["dsrdump", str(_dicom(batch, RICH, "sr.dcm"))], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "Comprehensive SR Document" in text and "Doe^Jane (F, 1950-01-02, #P-0042)" in text
    assert text.count('"Measurement Group"') == 25
    assert "Level of L4/L5 intervertebral disc" in text and "Spinal stenosis" in text


def test_fingerprint_follows_the_run_folder(batch: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(batch["run"], run)
    first = run_provenance(run, [0], tta=False)
    assert first == run_provenance(run, [0], tta=False) and len(first.fingerprint) == 64
    with open(run / "fold_0" / "grader" / "model.pt", "ab") as fh:
        fh.write(b"\0")
    assert run_provenance(run, [0], tta=False).fingerprint != first.fingerprint
    sr = pydicom.dcmread(_dicom(batch, RICH, "sr.dcm"))
    texts = {e.value for e in sr.iterall() if e.keyword == "TextValue"}
    fingerprint = run_provenance(batch["run"], [0], tta=False).fingerprint
    assert {f"run folder sha256 {fingerprint}", "folds 0", "tta false"} <= texts
    assert _record(batch, RICH)["dicom"]["sr_series_uid"] == sr.SeriesInstanceUID


def test_a_real_rsna_study(tiny: dict[str, Any], shared_data: Any, tmp_path: Path) -> None:
    """Real RSNA files lack SOPClassUID (only the file meta has it) and most patient attributes;
    the SR still refers to each graded instance by its class and UID, and dciodvfy's only errors
    are the source's own UIDs (RSNA's de-identification made them '100206310.1.1'), which the SR
    must repeat as they are."""
    study = shared_data("rsna_dicom") / "train_images" / "100206310"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(tiny["run"]),
            str(study),
            "--out",
            str(out),
            "--dicom-out",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    folder = out / "studies" / "100206310"
    record = json.loads((folder / "predictions.json").read_text())
    findings = read_findings(folder / "dicom" / "sr.dcm")
    metas = {}
    for path in study.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        metas[(int(path.parent.name), int(ds.InstanceNumber))] = ds
    located = [t for t in record["targets"] if t["series_id"] is not None]
    assert located
    for t in located:
        ds = metas[(t["series_id"], t["instance_number"])]
        assert "SOPClassUID" not in ds  # as RSNA ships them
        f = findings[t["row_id"]]
        assert f.sop_class_uid == ds.file_meta.MediaStorageSOPClassUID
        assert f.sop_instance_uid == ds.SOPInstanceUID
    if shutil.which("dciodvfy") is None:
        return
    for path in sorted((folder / "dicom").glob("*.dcm")):
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("Error")]
        assert all("Illegal root for UID" in x for x in errors), (path.name, errors)
