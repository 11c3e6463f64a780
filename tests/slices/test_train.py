"""k-fold training of both layouts: the run folder's layout, out-of-fold rows, resuming by fold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.errors import ConfigError, DataError
from spinegrade.slices.folder import LAYOUT, SlicesRun
from spinegrade.slices.train import train

from .conftest import fast_config, write_crops_folder


def _paths(run: Path, folds: int, only_slices: bool, graders: int = 1) -> list[Path]:
    """Every path of LAYOUT in `run` (fold_<k> and grader_<i> expanded), without the slices-only
    entries when `only_slices` is False."""
    out = []
    for name, what in LAYOUT:
        if not only_slices and what.startswith("slices:"):
            continue
        if "found_point_graders" in what:
            continue  # a run with found-point graders: test_found_point_graders_...
        names = (
            [name.replace("<i>", str(i)) for i in range(1, graders)] if "<i>" in name else [name]
        )
        names = [n.replace("<k>", str(k)) for n in names for k in range(folds)]
        out += [run / n.rstrip("/") for n in names]
    return out


def test_a_slices_run_holds_its_layout_and_one_oof_row_per_target(slices_run: dict) -> None:
    run = SlicesRun(slices_run["run"])
    missing = [
        str(p) for p in _paths(run.path, 2, True, run.config().slices.graders) if not p.exists()
    ]
    assert missing == [] and run.config().slices.graders == 2  # slices_cpu's two graders a fold
    assert run.mode() == "slices" and run.completed_folds() == [0, 1]
    points = pd.read_csv(slices_run["data"] / "points.csv")
    oof = pd.read_csv(run / "oof_points.csv")
    assert len(oof) == len(points) and set(oof["fold"]) == {0, 1}
    assert list(oof.columns) == [
        *("study_id", "series_id", "instance_number", "condition", "level"),
        *("x", "y", "confidence", "fold"),
    ]
    for name in ("oof_predictions.csv", "oof_predictions_true_points.csv"):
        rows = pd.read_csv(run / name)
        assert len(rows) == len(points) and rows["row_id"].is_unique
        assert rows[["normal_mild", "moderate", "severe"]].sum(axis=1).round(6).eq(1).all()
    folds = pd.read_csv(run / "folds.csv")
    records = []
    for k in (0, 1):  # a fold's OOF rows are its held-out studies
        held = set(folds.study_id[folds.fold == k])
        assert set(oof.study_id[oof.fold == k]) == held
        records.append(json.loads((run.fold_dir(k) / "fold.json").read_text())["epoch_seconds"])
        assert set(records[-1]) == {"localize", "grade"}
        assert all(v > 0 for v in records[-1].values())
    summary = slices_run["summary"].epoch_seconds  # the mean over the folds this call trained
    for stage in ("localize", "grade"):
        assert summary[stage] == pytest.approx((records[0][stage] + records[1][stage]) / 2)


def test_found_point_graders_train_around_the_fold_localisers_points(
    slices_folder: Path,
) -> None:
    from spinegrade.slices.grade import load_volumes
    from spinegrade.slices.inputs import open_folder
    from spinegrade.slices.localize import Prepared
    from spinegrade.slices.train import found_points

    cfg = fast_config("slices_cpu", "slices.found_point_graders=1")
    run = SlicesRun(slices_folder.parent / "run")
    train(slices_folder, run.path, cfg, folds=[0], progress=False)
    folds = pd.read_csv(run / "folds.csv")
    train_ids = sorted(folds.study_id[folds.fold != 0])
    found = pd.read_csv(run.fold_dir(0) / "found_points.csv")
    folder = open_folder(slices_folder, "slices", truth=True)
    marked = folder.points[folder.points.study_id.isin(train_ids)]
    keys = ["study_id", "series_id", "instance_number", "condition", "level"]
    assert len(found) == len(marked) and sorted(found.study_id.unique()) == train_ids
    assert found[keys].merge(marked[keys]).shape[0] == len(marked)  # one row per training target
    # what the fold's own localiser finds on its training slices, as prediction decodes it
    again = found_points(
        run,
        0,
        cfg,
        folder.subset(train_ids),
        Prepared.of(load_volumes(folder, cfg), cfg.localize.image_size),
    )
    assert np.allclose(again[["x", "y"]].to_numpy(), found[["x", "y"]].to_numpy(), atol=1e-4)
    assert not np.allclose(found[["x", "y"]].to_numpy(), marked[["x", "y"]].to_numpy())
    assert all(p.is_file() for p in run.grader_models(0, 2))


def test_a_crops_run_has_no_localiser_and_15_targets_a_study(crops_run: dict) -> None:
    run = SlicesRun(crops_run["run"])
    assert [str(p) for p in _paths(run.path, 2, False) if not p.exists()] == []
    assert not (run / "oof_points.csv").exists() and not run.localizer_dir(0).exists()
    crops = pd.read_csv(crops_run["data"] / "crops.csv")
    rows = pd.read_csv(run / "oof_predictions.csv")
    assert len(rows) == 3 * len(crops)  # canal, left and right at every level that has a crop
    assert run.mode() == "crops"


def test_training_resumes_by_fold_and_refuses_another_config(tmp_path: Path) -> None:
    data = write_crops_folder(tmp_path / "crops", studies=6)
    cfg = fast_config("crops_cpu")
    first = train(data, tmp_path / "run", cfg, folds=[0], progress=False)
    assert first.folds_trained == [0] and SlicesRun(tmp_path / "run").completed_folds() == [0]
    model = SlicesRun(tmp_path / "run").grader_model(0)
    stamp = model.stat().st_mtime_ns
    second = train(data, tmp_path / "run", cfg, progress=False)
    assert second.folds_reused == [0] and second.folds_trained == [1]
    assert model.stat().st_mtime_ns == stamp  # fold 0 was not trained again
    third = train(data, tmp_path / "run", cfg, progress=False)
    assert third.folds_trained == [] and third.folds_reused == [0, 1]
    (SlicesRun(tmp_path / "run").fold_dir(1) / "fold.json").unlink()  # as if stopped before it
    fourth = train(data, tmp_path / "run", cfg, progress=False)
    assert fourth.folds_trained == [1] and fourth.folds_reused == [0]
    assert model.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="another config"):
        train(data, tmp_path / "run", fast_config("crops_cpu", "grade.crop_px=20"), progress=False)


def test_a_run_of_one_layout_is_not_resumed_with_the_other(
    crops_run: dict, slices_folder: Path
) -> None:
    with pytest.raises(DataError, match="a run of crops, not slices"):
        train(slices_folder, crops_run["run"], fast_config("slices_cpu"), progress=False)
