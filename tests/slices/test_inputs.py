"""Reading the two layouts: mode detection, key columns only for prediction, one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.errors import DataError
from spinegrade.slices.inputs import (
    CROPS,
    SLICES,
    CropFolder,
    SliceFolder,
    detect_mode,
    open_folder,
    read_image,
)


def test_the_mode_comes_from_the_table_the_folder_holds(
    slices_folder: Path, crops_folder: Path, tmp_path: Path
) -> None:
    assert detect_mode(slices_folder) == SLICES
    assert detect_mode(crops_folder) == CROPS
    assert detect_mode(crops_folder, SLICES) == SLICES  # the flag wins
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither slices.csv and crops.csv"):
        detect_mode(tmp_path / "empty")
    with pytest.raises(DataError, match="expected one of slices, crops"):
        detect_mode(slices_folder, "axial")


def test_truth_is_read_only_when_asked(slices_folder: Path, crops_folder: Path) -> None:
    keys = SliceFolder.open(slices_folder, truth=False).points
    assert list(keys.columns) == ["study_id", "series_id", "instance_number", "condition", "level"]
    truth = SliceFolder.open(slices_folder, truth=True).points
    assert {"x", "y", "severity"} <= set(truth.columns)
    assert set(truth["severity"]) <= {"normal_mild", "moderate", "severe"}
    crops = CropFolder.open(crops_folder, truth=False).crops
    assert list(crops.columns) == ["study_id", "series_id", "instance_number", "level", "file"]


def test_prediction_reads_a_copy_without_the_truth_columns(slices_folder: Path, tmp_path: Path):
    copy = tmp_path / "keys_only"
    shutil.copytree(slices_folder, copy)
    points = pd.read_csv(copy / "points.csv")
    points.drop(columns=["x", "y", "x_orig", "y_orig", "severity"]).to_csv(
        copy / "points.csv", index=False
    )
    assert len(open_folder(copy, truth=False).points) == len(points)
    with pytest.raises(DataError, match=r"points.csv: missing column\(s\) x, y, severity"):
        open_folder(copy, truth=True)


def test_the_labels_table_holds_only_the_folders_targets(
    slices_folder: Path, crops_folder: Path
) -> None:
    slices = SliceFolder.open(slices_folder, truth=True)
    labels = slices.labels()
    assert len(labels) == 6 and labels.shape[1] == 26
    filled = labels.drop(columns="study_id").notna().sum()
    assert (filled[filled > 0].index.str.contains("neural_foraminal")).all()
    assert filled.sum() == len(slices.points)
    crops = CropFolder.open(crops_folder, truth=True)
    filled = crops.labels().drop(columns="study_id").notna().sum()
    assert not filled[filled.index.str.contains("foraminal")].any()
    assert filled.sum() == 3 * len(crops.crops) - 1  # one grade is blank


def test_a_missing_table_is_one_line(slices_folder: Path) -> None:
    (slices_folder / "slices.csv").unlink()
    with pytest.raises(DataError) as err:
        SliceFolder.open(slices_folder, truth=True)
    assert str(err.value) == f"{slices_folder / 'slices.csv'}: file not found"


def test_a_listed_file_that_is_absent_is_one_line(crops_folder: Path) -> None:
    first = pd.read_csv(crops_folder / "crops.csv")["file"].iloc[0]
    (crops_folder / first).unlink()
    with pytest.raises(DataError, match="listed in .*crops.csv but absent") as err:
        open_folder(crops_folder, truth=False)
    assert str(err.value).startswith(str(crops_folder / first)) and "\n" not in str(err.value)


def test_points_on_unlisted_slices_and_unknown_names_are_refused(slices_folder: Path) -> None:
    points = pd.read_csv(slices_folder / "points.csv")
    points.loc[0, "instance_number"] = 99
    points.to_csv(slices_folder / "points.csv", index=False)
    with pytest.raises(DataError, match="slices.csv does not list, e.g. study 1000"):
        SliceFolder.open(slices_folder, truth=False)
    points.loc[0, "instance_number"] = 1
    points.loc[0, "condition"] = "spinal_canal_stenosis"
    points.to_csv(slices_folder / "points.csv", index=False)
    with pytest.raises(DataError, match="unknown condition 'spinal_canal_stenosis'"):
        SliceFolder.open(slices_folder, truth=False)


def test_images_read_as_grey_or_channels_first(slices_folder: Path, crops_folder: Path) -> None:
    grey = read_image(slices_folder / "images/1000/50/1.png", 1)
    assert grey.shape == (64, 64) and grey.dtype == np.uint8
    crop = read_image(crops_folder / "images/2000/70/1.png", 3)
    assert crop.shape == (3, 18, 28)
    (slices_folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        read_image(slices_folder / "broken.png", 1)
