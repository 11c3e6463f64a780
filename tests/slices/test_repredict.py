"""`slices repredict`: a trained run's out-of-fold rows redone from its fold models with other
inference settings, or for some folds only, into a new run folder; the source is only read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from spinegrade.errors import ConfigError, DataError
from spinegrade.slices.folder import SlicesRun
from spinegrade.slices.repredict import repredict
from spinegrade.slices.train import train

from .conftest import fast_config

SEVERITY_COLUMNS = ["normal_mild", "moderate", "severe"]


def _rows(run: Path, name: str = "oof_predictions.csv") -> pd.DataFrame:
    return pd.read_csv(run / name).sort_values("row_id").reset_index(drop=True)


def _stamps(run: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_the_same_settings_give_the_same_rows_and_metrics(slices_run: dict, tmp_path: Path):
    before = _stamps(slices_run["run"])
    metrics = repredict(slices_run["run"], tmp_path / "again", progress=False)
    for name in ("oof_predictions.csv", "oof_predictions_true_points.csv"):
        pd.testing.assert_frame_equal(
            _rows(tmp_path / "again", name), _rows(slices_run["run"], name), atol=1e-6, rtol=0
        )
    new_points = pd.read_csv(tmp_path / "again" / "oof_points.csv")
    old_points = pd.read_csv(slices_run["run"] / "oof_points.csv")
    pd.testing.assert_frame_equal(new_points, old_points, atol=1e-4, rtol=0)
    old = json.loads((slices_run["run"] / "metrics.json").read_text())
    for who in ("model", "model_true_points"):
        assert metrics[who]["score"]["terms"]["foraminal"] == pytest.approx(
            old[who]["score"]["terms"]["foraminal"], abs=1e-6
        )
    assert metrics["localization"] == old["localization"]
    assert _stamps(slices_run["run"]) == before  # the source run is only read
    assert not (tmp_path / "again.partial").exists()


def test_test_time_mirroring_redoes_the_rows_into_a_run_that_train_resumes(
    crops_run: dict, tmp_path: Path
) -> None:
    flipped = not SlicesRun(crops_run["run"]).config().slices.tta  # crops_cpu mirrors: off here
    override = f"slices.tta={str(flipped).lower()}"
    new = tmp_path / "tta"
    repredict(crops_run["run"], new, [override], progress=False)
    run = SlicesRun(new)
    assert run.config().slices.tta is flipped and run.completed_folds() == [0, 1]
    info = run.info()
    assert info["repredicted_from"] == str(Path(crops_run["run"]).resolve())
    assert info["overrides"] == [override] and info["slices_mode"] == "crops"
    old, redone = _rows(crops_run["run"]), _rows(new)
    assert list(redone["row_id"]) == list(old["row_id"])
    moved = (redone[SEVERITY_COLUMNS] - old[SEVERITY_COLUMNS]).abs().to_numpy().max()
    assert moved > 1e-4  # the mirrored half of each average changed the rows
    assert (run / "calibration.json").is_file() and (run / "report").is_dir()
    cfg = fast_config("crops_cpu", override)
    again = train(crops_run["data"], new, cfg, progress=False)
    assert again.folds_trained == [] and again.folds_reused == [0, 1]


@pytest.mark.parametrize("decode", ["ordered", "series"])
def test_another_decoding_redoes_the_points_of_a_slices_run(
    slices_run: dict, tmp_path: Path, decode: str
) -> None:
    overrides = [
        f"slices.decode={decode}",
        "slices.level_gap_mm=12",
        "slices.series_radius_mm=6",
        "slices.centroid_floor=0.5",
        "slices.grade_around_mm=2",
        "slices.localize_zoom=0.1",
    ]
    metrics = repredict(slices_run["run"], tmp_path / decode, overrides, progress=False)
    cfg = SlicesRun(tmp_path / decode).config().slices
    assert cfg.decode == decode and cfg.level_gap_mm == 12.0
    assert cfg.series_radius_mm == 6.0 and cfg.centroid_floor == 0.5 and cfg.grade_around_mm == 2
    assert cfg.localize_zoom == 0.1
    new = pd.read_csv(tmp_path / decode / "oof_points.csv")
    old = pd.read_csv(slices_run["run"] / "oof_points.csv")
    keys = ["study_id", "series_id", "instance_number", "condition", "level", "fold"]
    pd.testing.assert_frame_equal(new[keys], old[keys])
    assert new[["x", "y", "confidence"]].notna().all().all()
    assert metrics["localization"]["model"]["points"] == len(new)


def test_some_folds_only_score_their_own_held_out_studies(crops_run: dict, tmp_path: Path):
    repredict(crops_run["run"], tmp_path / "f1", folds=[1], progress=False)
    folds = pd.read_csv(crops_run["run"] / "folds.csv")
    held = set(folds.study_id[folds.fold == 1])
    rows = _rows(tmp_path / "f1")
    assert {int(r.split("_")[0]) for r in rows["row_id"]} == held
    old = _rows(crops_run["run"])
    old = old[old["row_id"].isin(rows["row_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(rows, old, atol=1e-6, rtol=0)
    assert SlicesRun(tmp_path / "f1").completed_folds() == [1]


def test_a_training_key_an_existing_folder_or_a_missing_fold_is_refused(
    crops_run: dict, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="grade.optim.epochs: changes what was trained"):
        repredict(crops_run["run"], tmp_path / "a", ["grade.optim.epochs=2"], progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.partial").exists()
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="already exists"):
        repredict(crops_run["run"], tmp_path / "b", progress=False)
    with pytest.raises(DataError, match=r"no complete fold\(s\) \[3\]"):
        repredict(crops_run["run"], tmp_path / "c", folds=[3], progress=False)


def test_the_command_line_says_what_it_refuses_in_one_line(crops_run: dict, tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "spinegrade", "slices", "repredict", str(crops_run["run"]),
         "-o", str(tmp_path / "x"), "grade.crop_px=20"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "grade.crop_px: changes what was trained" in lines[0], proc.stderr
