"""Loading and validating the RSNA tables: the real files, and small broken copies in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import AXIAL_T2, SAGITTAL_T1, SAGITTAL_T2, TARGET_COLUMNS, TARGETS
from spinegrade.data.tables import (
    BLANK_LABEL,
    labels_long,
    load_tables,
    validate_tables,
)
from spinegrade.errors import DataError


@pytest.fixture(scope="module")
def real(rsna: Path):
    return load_tables(rsna)


def test_real_files_load(real) -> None:
    assert real.labels.shape == (1975, 26)
    assert list(real.labels.columns) == ["study_id", *TARGET_COLUMNS]
    assert int(real.labels[list(TARGET_COLUMNS)].isna().sum().sum()) == 572
    assert len(real.series) == 6294
    assert real.series["series_description"].value_counts().to_dict() == {
        AXIAL_T2: 2340,
        SAGITTAL_T1: 1980,
        SAGITTAL_T2: 1974,
    }
    assert len(real.coordinates) == 9739 and real.coordinates["study_id"].nunique() == 395
    assert real.coordinates["series_description"].notna().all()
    assert set(real.coordinates["level"]) == {"l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"}
    assert real.coordinates["x"].dtype == np.float64


def test_real_labels_long(real) -> None:
    long = labels_long(real.labels)
    assert len(long) == 1975 * 25
    assert (long["label"] == BLANK_LABEL).sum() == 572
    shares = long.loc[long["label"] >= 0, "label"].value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(shares.to_numpy(), [0.774, 0.163, 0.063], atol=5e-4)  # README
    first = long.iloc[0]
    assert (first["study_id"], first["condition"], first["level"]) == (4003253, *TARGETS[0])
    assert first["row_id"] == "4003253_spinal_canal_stenosis_l1_l2"


def test_real_validation_finds_exactly_the_five_spinal_points_on_t1(real) -> None:
    report = validate_tables(real)
    assert report.ok, report.summary()
    wrong = report.find("coordinates on an unexpected series type")
    assert wrong is not None and wrong.count == 5 and wrong.severity == "warning"
    assert all("spinal_canal_stenosis" in e and "on Sagittal T1" in e for e in wrong.examples)
    assert report.find("blank labels (not scored)").count == 572
    assert report.find("studies without Sagittal T1").count == 2
    assert report.find("studies without Sagittal T2/STIR").count == 1
    assert report.find("studies without Axial T2") is None
    assert (
        report.find("several coordinates for one study/condition/level") is None
    )  # none in the subset
    assert report.to_dict()["ok"] is True


def test_real_test_split(rsna: Path) -> None:
    tables = load_tables(rsna, split="test")
    assert tables.labels is None and tables.coordinates is None
    assert tables.series["study_id"].tolist() == [44036939] * 3


# --- small synthetic copies ----------------------------------------------------------------------


def write_rsna(root: Path, *, coordinates_name: str = "train_label_coordinates.csv") -> Path:
    """A 3-study RSNA folder with a few deliberate problems (see
    test_validation_of_a_messy_copy)."""
    root.mkdir(parents=True, exist_ok=True)
    labels = pd.DataFrame({"study_id": [1, 2, 3], **{c: "Normal/Mild" for c in TARGET_COLUMNS}})
    labels.loc[0, "spinal_canal_stenosis_l1_l2"] = "Severe"
    labels.loc[1, "spinal_canal_stenosis_l2_l3"] = "Sever"  # unknown severity
    labels.loc[2, "left_subarticular_stenosis_l1_l2"] = np.nan  # blank
    labels.to_csv(root / "train.csv", index=False)
    pd.DataFrame(
        {
            "study_id": [1, 1, 1, 2, 2, 4],
            "series_id": [10, 11, 12, 20, 21, 40],
            "series_description": [
                SAGITTAL_T1,
                SAGITTAL_T2,
                AXIAL_T2,
                SAGITTAL_T1,
                AXIAL_T2,
                AXIAL_T2,
            ],
        }
    ).to_csv(root / "train_series_descriptions.csv", index=False)
    pd.DataFrame(
        [
            (1, 11, 5, "Spinal Canal Stenosis", "L1/L2", 100.0, 120.0),
            (1, 10, 3, "Spinal Canal Stenosis", "L2/L3", 101.0, 140.0),  # on T1, not T2
            (1, 10, 3, "Left Neural Foraminal Narrowing", "L1/L2", 90.0, -3.0),  # negative y
            (
                1,
                10,
                4,
                "Left Neural Foraminal Narrowing",
                "L1/L2",
                91.0,
                60.0,
            ),  # 2nd point same target
            (
                1,
                12,
                7,
                "Left Subarticular Stenosis",
                "L9/L10",
                239.0,
                np.nan,
            ),  # unknown level, NaN y
            (
                2,
                99,
                1,
                "Right Subarticular Stenosis",
                "L4/L5",
                200.0,
                200.0,
            ),  # series not described
            (2, 20, 1, "Bad Condition", "L4/L5", 200.0, 200.0),
            (3, 30, 1, "Left Subarticular Stenosis", "L1/L2", 200.0, 200.0),  # blank target
        ],
        columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"],
    ).to_csv(root / coordinates_name, index=False)
    return root


def test_load_converts_names_and_keeps_unknown_values(tmp_path: Path) -> None:
    tables = load_tables(write_rsna(tmp_path / "rsna"))
    assert tables.labels.loc[0, "spinal_canal_stenosis_l1_l2"] == "severe"
    assert tables.labels.loc[1, "spinal_canal_stenosis_l2_l3"] == "Sever"
    assert pd.isna(tables.labels.loc[2, "left_subarticular_stenosis_l1_l2"])
    coords = tables.coordinates
    assert coords.loc[0, ["condition", "level"]].tolist() == ["spinal_canal_stenosis", "l1_l2"]
    assert coords.loc[4, "level"] == "L9/L10" and coords.loc[6, "condition"] == "Bad Condition"
    assert pd.isna(coords.loc[5, "series_description"])
    with pytest.raises(DataError, match="unknown severity value.*'Sever'"):
        labels_long(tables.labels)


def test_validation_of_a_messy_copy(tmp_path: Path) -> None:
    report = validate_tables(load_tables(write_rsna(tmp_path / "rsna")))
    counts = {p.kind: (p.count, p.severity) for p in report.problems}
    assert counts == {
        "studies without Sagittal T1": (1, "warning"),  # study 4
        "studies without Sagittal T2/STIR": (2, "warning"),  # studies 2 and 4
        "unknown severity": (1, "error"),
        "blank labels (not scored)": (1, "warning"),
        "labelled studies without series": (1, "warning"),  # study 3
        "studies with series but no labels": (1, "warning"),  # study 4
        "unknown condition in coordinates": (1, "error"),
        "unknown level in coordinates": (1, "error"),
        "coordinates with NaN or negative x/y": (2, "error"),
        "several coordinates for one study/condition/level": (1, "warning"),
        "coordinates on a series not in the descriptions": (2, "error"),  # 2/99 and 3/30
        "coordinates on an unexpected series type": (1, "warning"),
        "coordinates of blank or unlabelled targets": (3, "warning"),  # blank + 2 unknown names
    }
    assert not report.ok
    assert "unknown severity" in report.summary()
    assert "'Sever'" in report.find("unknown severity").examples[0]


def test_duplicates_are_errors(tmp_path: Path) -> None:
    root = write_rsna(tmp_path / "rsna")
    for name in ("train.csv", "train_series_descriptions.csv", "train_label_coordinates.csv"):
        frame = pd.read_csv(root / name)
        pd.concat([frame, frame.iloc[[0]]]).to_csv(root / name, index=False)
    report = validate_tables(load_tables(root))
    for kind in ("duplicate label rows", "duplicate series rows", "duplicate coordinate rows"):
        assert report.find(kind).count == 1 and report.find(kind).severity == "error"


def test_subset_coordinates_file_is_the_fallback(tmp_path: Path) -> None:
    root = write_rsna(tmp_path / "rsna", coordinates_name="train_label_coordinates_subset.csv")
    assert len(load_tables(root).coordinates) == 8
    full = pd.read_csv(root / "train_label_coordinates_subset.csv").iloc[:2]
    full.to_csv(root / "train_label_coordinates.csv", index=False)
    assert len(load_tables(root).coordinates) == 2  # the full file wins when present


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda r: (r / "train.csv").unlink(), "train.csv: file not found"),
        (
            lambda r: (r / "train_label_coordinates.csv").unlink(),
            "train_label_coordinates.csv: file not",
        ),
        (
            lambda r: _edit(
                r / "train.csv", lambda f: f.drop(columns="spinal_canal_stenosis_l5_s1")
            ),
            "missing column(s) spinal_canal_stenosis_l5_s1",
        ),
        (
            lambda r: _edit(
                r / "train_series_descriptions.csv",
                lambda f: f.assign(series_id=f["series_id"].astype(str).replace("20", "2o")),
            ),
            "column series_id must hold integers; row 5 has '2o'",
        ),
        (
            lambda r: _edit(
                r / "train_label_coordinates.csv", lambda f: f.assign(x=["a", *f["x"][1:]])
            ),
            "column x must hold numbers; row 2 has 'a'",
        ),
        (lambda r: (r / "train.csv").write_text(""), "not a readable CSV"),
    ],
)
def test_structural_errors_are_one_line(tmp_path: Path, break_it, message: str) -> None:
    root = write_rsna(tmp_path / "rsna")
    break_it(root)
    with pytest.raises(DataError) as info:
        load_tables(root)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_folder_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        load_tables(tmp_path / "nowhere")
    with pytest.raises(DataError, match="unknown split"):
        load_tables(tmp_path, split="val")
    with pytest.raises(DataError, match="test_series_descriptions.csv: file not found"):
        load_tables(tmp_path, split="test")


def _edit(path: Path, change) -> None:
    change(pd.read_csv(path, dtype=str)).to_csv(path, index=False)
