"""`slices predict`: key columns in, one row per asked target out; one fold reproduces its
calibrated out-of-fold rows; the folds' points are combined by their medoid."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import SEVERITIES, row_id
from spinegrade.slices.predict import medoid, predict


def _keys_only(data: Path, out: Path) -> Path:
    shutil.copytree(data, out)
    points = pd.read_csv(out / "points.csv")
    points[["study_id", "series_id", "instance_number", "condition", "level"]].to_csv(
        out / "points.csv", index=False
    )
    return out


def test_predict_on_a_copy_without_points_or_grades(slices_run: dict, tmp_path: Path) -> None:
    data = _keys_only(slices_run["data"], tmp_path / "keys")
    result = predict(slices_run["run"], data, tmp_path / "out", device="cpu", progress=False)
    asked = pd.read_csv(data / "points.csv")
    sub = pd.read_csv(tmp_path / "out" / "submission.csv")
    expected = [row_id(s, c, lv) for s, c, lv in zip(asked.study_id, asked.condition, asked.level)]
    assert sub["row_id"].tolist() == expected and result["rows"] == len(asked)
    np.testing.assert_allclose(sub[list(SEVERITIES)].sum(axis=1), 1.0, atol=1e-9)
    points = pd.read_csv(tmp_path / "out" / "points.csv")
    assert list(points.columns) == [*asked.columns, "x", "y", "confidence"]
    assert len(points) == len(asked) and points[["x", "y"]].notna().all().all()
    assert result["folds"] == [0, 1]


def test_one_fold_reproduces_its_calibrated_out_of_fold_rows(slices_run: dict, tmp_path: Path):
    run, data = slices_run["run"], slices_run["data"]
    folds = pd.read_csv(run / "folds.csv")
    calibrated = pd.read_csv(run / "oof_calibrated.csv").set_index("row_id")
    oof_points = pd.read_csv(run / "oof_points.csv")
    for k in (0, 1):
        predict(run, data, tmp_path / f"f{k}", folds=[k], device="cpu", progress=False)
        sub = pd.read_csv(tmp_path / f"f{k}" / "submission.csv").set_index("row_id")
        held = set(folds.study_id[folds.fold == k])
        rows = [r for r in sub.index if int(r.split("_")[0]) in held]
        np.testing.assert_allclose(
            sub.loc[rows].to_numpy(), calibrated.loc[rows].to_numpy(), rtol=0, atol=1e-5
        )
        pts = pd.read_csv(tmp_path / f"f{k}" / "points.csv")
        mine = oof_points[oof_points.fold == k].drop(columns="fold")
        merged = mine.merge(pts, on=["study_id", "condition", "level"], suffixes=("", "_p"))
        # the same points, up to float32 sums that differ with the batch (other slices beside)
        np.testing.assert_allclose(merged[["x", "y"]], merged[["x_p", "y_p"]], atol=1e-3)


def test_predict_on_crops_writes_three_rows_per_crop(crops_run: dict, tmp_path: Path) -> None:
    copy = tmp_path / "crops"
    shutil.copytree(crops_run["data"], copy)
    crops = pd.read_csv(copy / "crops.csv")
    crops[["study_id", "series_id", "instance_number", "level", "file"]].to_csv(
        copy / "crops.csv", index=False
    )  # no grades: prediction needs none
    result = predict(crops_run["run"], copy, tmp_path / "out", device="cpu", progress=False)
    sub = pd.read_csv(tmp_path / "out" / "submission.csv")
    assert len(sub) == 3 * len(crops) == result["rows"]
    assert not (tmp_path / "out" / "points.csv").exists()
    ids = set(sub.row_id)
    assert row_id(2001, "left_subarticular_stenosis", "l5_s1") not in ids  # that crop is absent
    assert row_id(2001, "spinal_canal_stenosis", "l4_l5") in ids


def test_the_medoid_is_robust_and_a_tie_goes_to_the_higher_peak() -> None:
    keys = {"study_id": [1], "series_id": [2], "instance_number": [3]}
    keys |= {"condition": ["left_neural_foraminal_narrowing"], "level": ["l1_l2"]}

    def fold(x: float, y: float, conf: float) -> pd.DataFrame:
        return pd.DataFrame({**keys, "x": [x], "y": [y], "confidence": [conf]})

    three = medoid([fold(10, 10, 0.2), fold(11, 10, 0.1), fold(40, 40, 0.9)])
    assert (three.x.iloc[0], three.y.iloc[0]) == (11, 10)  # nearest the others; not the outlier
    two = medoid([fold(10, 10, 0.2), fold(20, 10, 0.7)])
    assert two.x.iloc[0] == 20 and two.confidence.iloc[0] == pytest.approx(0.7)


def test_a_folds_graders_are_averaged_before_its_temperatures(slices_run: dict) -> None:
    from spinegrade.slices.folder import SlicesRun
    from spinegrade.slices.grade import load_volumes
    from spinegrade.slices.inputs import open_folder
    from spinegrade.slices.predict import FoldModels, load_folds, predict_folder

    run = SlicesRun(slices_run["run"])
    cfg = run.config()
    (fold,) = load_folds(run, [0], "cpu")
    assert len(fold.graders) == cfg.slices.graders == 2
    assert [p.parent.name for p in run.grader_models(0, 2)] == ["grader", "grader_1"]
    folder = open_folder(slices_run["data"], "slices", truth=False)
    volumes = load_volumes(folder, cfg)

    def probs(graders: list, temperatures: dict) -> np.ndarray:
        one = FoldModels(0, graders, fold.localizer, temperatures)
        return (
            predict_folder([one], folder, volumes, cfg.slices)
            .submission[list(SEVERITIES)]
            .to_numpy()
        )

    first, second = probs(fold.graders[:1], {}), probs(fold.graders[1:], {})
    assert np.abs(first - second).max() > 1e-4  # two seeds, two different graders
    np.testing.assert_allclose(probs(fold.graders, {}), (first + second) / 2, atol=1e-6)
    # with a temperature, the mean is calibrated, not the mean of calibrated graders
    t = {"foraminal": 2.0}
    mean = (first + second) / 2
    tempered = mean ** (1 / 2.0) / (mean ** (1 / 2.0)).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs(fold.graders, t), tempered, atol=1e-5)
