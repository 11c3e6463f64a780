"""Dataset inspection: real label facts, a tiny RSNA-layout set with images, bad files, the CLI."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spinegrade import cli
from spinegrade.constants import (
    AXIAL_T2,
    CONDITION_LABELS,
    LEVEL_LABELS,
    SAGITTAL_T1,
    SAGITTAL_T2,
    SEVERITY_LABELS,
    TARGETS,
)
from spinegrade.data.facts import read_headers
from spinegrade.dicom import make_uid, write_series
from spinegrade.report.inspect import inspect_dataset

STUDIES = (101, 202)
#: series id -> (study, description, slices, rows, cols, row_dir, col_dir)
SAG = ((0, 1, 0), (0, 0, -1))
AX = ((1, 0, 0), (0, 1, 0))
SERIES = {
    11: (101, SAGITTAL_T1, 5, 40, 32, *SAG),
    12: (101, SAGITTAL_T2, 6, 40, 32, *SAG),
    13: (101, AXIAL_T2, 7, 24, 28, *AX),
    21: (202, SAGITTAL_T1, 5, 40, 32, *SAG),
    22: (202, SAGITTAL_T2, 6, 40, 32, *SAG),
    23: (202, AXIAL_T2, 7, 24, 28, *AX),
}
SERIES_OF = {
    "Spinal Canal Stenosis": SAGITTAL_T2,
    "Left Neural Foraminal Narrowing": SAGITTAL_T1,
    "Right Neural Foraminal Narrowing": SAGITTAL_T1,
    "Left Subarticular Stenosis": AXIAL_T2,
    "Right Subarticular Stenosis": AXIAL_T2,
}


def make_dataset(root: Path, *, images: bool = True) -> Path:
    """Two studies in the RSNA layout: label CSVs, 6 series of tiny DICOMs, full coordinates.

    Planted problems: study 101's spinal L1/L2 point lies outside its 32x40 image, its left
    foraminal L1/L2 point names instance 99 (not in the series), study 202's spinal L2/L3 point
    is on the axial series 23, and series 13 holds a corrupt file `50.dcm` (its other 7 files
    are fine).
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sev = list(SEVERITY_LABELS.values())
    labels = pd.DataFrame(
        [
            {"study_id": s, **{f"{c}_{lv}": sev[(i + k) % 3] for k, (c, lv) in enumerate(TARGETS)}}
            for i, s in enumerate(STUDIES)
        ]
    )
    labels.to_csv(root / "train.csv", index=False)
    desc = pd.DataFrame(
        [(st, sid, d) for sid, (st, d, *_) in SERIES.items()],
        columns=["study_id", "series_id", "series_description"],
    )
    desc.to_csv(root / "train_series_descriptions.csv", index=False)
    rows = []
    for study in STUDIES:
        for k, (c, lv) in enumerate(TARGETS):
            label = CONDITION_LABELS[c]
            sid = next(i for i, v in SERIES.items() if v[0] == study and v[1] == SERIES_OF[label])
            rows.append(
                (study, sid, 2 + k % 3, label, LEVEL_LABELS[lv], 10.0 + k % 5, 12.0 + k % 7)
            )
    coords = pd.DataFrame(
        rows, columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    )
    coords.loc[0, ["x", "y"]] = [300.0, 20.0]  # outside 32 columns
    coords.loc[5, "instance_number"] = 99  # left foraminal L1/L2 of study 101: no such instance
    coords.loc[25 + 1, "series_id"] = 23  # study 202's spinal L2/L3 point on its axial series
    coords.to_csv(root / "train_label_coordinates.csv", index=False)
    if images:
        for sid, (study, d, n, r, c, rdir, cdir) in SERIES.items():
            write_series(
                root / "train_images" / str(study) / str(sid),
                rng.integers(0, 1000, (n, r, c), dtype=np.uint16),
                origin=(0, 0, 0),
                row_dir=rdir,
                col_dir=cdir,
                pixel_spacing=(0.7, 0.6),
                slice_thickness=4.0,
                series_description=d,
                study_uid=make_uid("st", study),
                series_uid=make_uid("se", sid),
                series_number=sid,
                manufacturer="ACME",
                instance_numbers=list(range(n, 0, -1)),
            )  # reversed: sort must be spatial
        (root / "train_images" / "101" / "13" / "50.dcm").write_bytes(b"not a DICOM file" * 10)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    root = make_dataset(tmp_path_factory.mktemp("rsna"))
    out = root.parent / "report"
    return root, inspect_dataset(root, out, workers=2, progress=False)


def test_real_label_files_give_the_known_facts(rsna: Path, tmp_path: Path) -> None:
    result = inspect_dataset(rsna, tmp_path, progress=False)
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts == json.loads(json.dumps(result.summary))
    assert facts["studies"] == 1975 and facts["series"] == 6294
    assert facts["blank_cells"] == 572
    shares = {k: round(100 * v, 1) for k, v in facts["class_shares"].items()}
    assert shares == {"normal_mild": 77.4, "moderate": 16.3, "severe": 6.3}
    assert facts["series_types"] == {AXIAL_T2: 2340, SAGITTAL_T1: 1980, SAGITTAL_T2: 1974}
    assert facts["coordinates"]["studies"] == 395 and facts["coordinates"]["rows"] == 9739
    assert facts["coordinates"]["on_series_type"]["spinal_canal_stenosis"][SAGITTAL_T1] == 5
    assert facts["problems"]["coordinates on an unexpected series type"] == 5
    assert facts["images"]["present"] is False
    page = result.report.read_text()
    assert "No images:" in page and "1,975" in page


def test_tiny_dataset_header_sections(tiny) -> None:
    _, result = tiny
    img = result.summary["images"]
    assert img["present"] and img["series_read"] == 6
    assert img["files_read"] == 2 * (5 + 6 + 7)
    assert img["image_sizes"] == {"40x32": 4, "24x28": 2}
    assert img["slices_per_series"] == {"min": 5, "median": 6, "max": 7}
    assert img["planes"] == {"sagittal": 4, "axial": 2}
    assert img["manufacturers"] == {"ACME": 6}


def test_tiny_dataset_flags_planted_problems(tiny) -> None:
    _, result = tiny
    problems = result.problems.set_index("kind")
    assert problems.loc["coordinates outside the image", "count"] == 1
    assert "x=300.0" in problems.loc["coordinates outside the image", "examples"][0]
    assert problems.loc["instance number not in the series", "count"] == 1
    assert "instance 99" in problems.loc["instance number not in the series", "examples"][0]
    assert problems.loc["coordinates on a series whose slice plane does not fit", "count"] == 1
    assert (
        "study 202 series 23"
        in problems.loc["coordinates on a series whose slice plane does not fit", "examples"][0]
    )
    assert problems.loc["coordinates on an unexpected series type", "count"] == 1  # validate_tables
    assert "coordinates on a series without images" not in problems.index


def test_corrupt_file_is_listed_not_fatal(tiny) -> None:
    _, result = tiny
    assert len(result.header_failures) == 1
    failure = result.header_failures.iloc[0]
    assert failure["path"].endswith("50.dcm") and "not a readable DICOM" in failure["reason"]
    assert result.summary["problems"]["unreadable DICOM files or folders"] == 1
    assert "50.dcm" in result.report.read_text()


def test_report_is_self_contained_and_embeds_every_figure(tiny) -> None:
    _, result = tiny
    page = result.report.read_text()
    assert {p.name for p in result.figures} >= {"severity.png", "correlation.png", "headers.png"}
    assert all(p.is_file() and p.read_bytes()[:4] == b"\x89PNG" for p in result.figures)
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == len(result.figures)
    assert not re.search(r'(src|href)="(https?:|file:)', page)


def test_serial_reading_matches_parallel(tiny) -> None:
    root, result = tiny
    serial, serial_failed = read_headers(root / "train_images", workers=1, progress=False)
    parallel, parallel_failed = read_headers(root / "train_images", workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)
    pd.testing.assert_frame_equal(serial_failed, parallel_failed)
    assert len(serial) == result.summary["images"]["files_read"]
    assert result.summary["coordinates"]["normalised"] is True


@pytest.mark.slow
def test_cli_on_synthetic_studies_finds_them_consistent(tmp_path: Path) -> None:
    from spinegrade.data.synthetic import generate

    generate(tmp_path / "synth", 2, seed=3, size="small")
    res = CliRunner().invoke(
        cli.app,
        ["inspect", str(tmp_path / "synth"), "--out", str(tmp_path / "out"), "--workers", "2"],
    )
    assert res.exit_code == 0, res.output
    n_files = len(list((tmp_path / "synth" / "train_images").rglob("*.dcm")))
    assert "studies / series" in res.output and f"{n_files} files in" in res.output
    facts = json.loads((tmp_path / "out" / "facts.json").read_text())
    assert facts["studies"] == 2 and facts["images"]["files_read"] == n_files
    assert facts["images"]["header_failures"] == 0 and facts["coordinates"]["normalised"] is True
    assert {"sagittal", "axial"} <= set(facts["images"]["planes"])
    assert not set(facts["problems"]) & {
        "coordinates outside the image",
        "instance number not in the series",
        "coordinates on a series without images",
        "coordinates on a series whose slice plane does not fit",
    }
    page = (tmp_path / "out" / "report.html").read_text()
    # Eight dataset figures, and each study's labelled points on its three overlays.
    labelled = sorted(p.name for p in (tmp_path / "out").glob("labelled_*.png"))
    assert len(labelled) == 2 * 3, labelled
    assert page.count('<img src="data:image/png;base64,') == 8 + len(labelled)


def test_cli_missing_folder_is_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        ["spinegrade", "inspect", str(tmp_path / "nope"), "--out", str(tmp_path / "out")],
    )
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "Traceback" not in err
