"""The ensemble of fold models: averaging graded folds, the prior where none graded, the medoid
point and its spread, per-fold calibration, and loading a run folder safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import TARGETS
from spinegrade.cv.ensemble import FLAG_FOLDS_DISAGREE, FLAG_PRIOR, FoldModels, combine
from spinegrade.inference import discover_studies
from spinegrade.inference.discover import load_source
from spinegrade.localize.predict import LOCATION_COLUMNS


def _points(world: np.ndarray | None) -> pd.DataFrame:
    """A location table whose every target sits at `world` (None: nothing located)."""
    rows = []
    for c, lv in TARGETS:
        if world is None:
            rows.append(
                (
                    1,
                    None,
                    None,
                    c,
                    lv,
                    np.nan,
                    np.nan,
                    None,
                    None,
                    np.nan,
                    np.nan,
                    np.nan,
                    0.0,
                    "",
                    "no series",
                )
            )
        else:
            rows.append((1, 5, 3, c, lv, 10.0, 20.0, 0, 2, *world, 0.9, "sagittal_t2", ""))
    return pd.DataFrame(rows, columns=list(LOCATION_COLUMNS))


def test_combine_means_graded_folds_and_falls_back_to_prior(tiny: dict[str, Path]) -> None:
    study = load_source(
        discover_studies(tiny["data"] / "train_images" / str(tiny["complete"])).studies[0]
    )
    prior = np.tile([0.7, 0.2, 0.1], (25, 1))
    probs = np.full((3, 25, 3), np.nan)
    probs[0, 0], probs[1, 0] = [0.2, 0.3, 0.5], [0.4, 0.5, 0.1]  # target 0: two folds graded it
    probs[2, 1] = [0.1, 0.1, 0.8]  # target 1: one fold
    points = [
        _points(np.array([0.0, 0.0, 0.0])),
        _points(np.array([0.0, 3.0, 4.0])),
        _points(np.array([0.0, 30.0, 40.0])),
    ]
    pred = combine(1, study, points, probs, prior)
    np.testing.assert_allclose(pred.probs[0], [0.3, 0.4, 0.3])
    np.testing.assert_allclose(pred.probs[1], [0.1, 0.1, 0.8])
    np.testing.assert_allclose(pred.probs[2:], prior[2:])
    t = pred.targets
    assert t.folds_graded.tolist()[:3] == [2, 1, 0]
    assert FLAG_PRIOR in t["flags"][2] and FLAG_PRIOR not in t["flags"][0]
    # the medoid is the middle fold's point; the farthest fold is 50 mm from it
    assert (t.world_y[0], t.world_z[0]) == (3.0, 4.0) and t.spread_mm[0] == pytest.approx(
        np.hypot(27, 36)
    )
    assert FLAG_FOLDS_DISAGREE in t["flags"][0]
    nothing = combine(1, study, [_points(None)], np.full((1, 25, 3), np.nan), prior)
    assert nothing.targets.series_id.isna().all() and (nothing.targets.reason == "no series").all()


def test_each_fold_is_calibrated_with_its_own_groups_temperatures() -> None:
    from spinegrade.grade.calibrate import apply_temperature

    fold = FoldModels(0, None, None, {"spinal": 2.0, "foraminal": 1.0, "subarticular": 0.5})  # type: ignore[arg-type]
    probs = np.tile([0.7, 0.2, 0.1], (25, 1))
    probs[3] = np.nan  # a spinal target that was not graded stays NaN
    out = fold.calibrate(probs)
    spinal = [t for t, (c, _) in enumerate(TARGETS) if c == "spinal_canal_stenosis"]
    sub = [t for t, (c, _) in enumerate(TARGETS) if c.endswith("subarticular_stenosis")]
    np.testing.assert_allclose(out[spinal[0]], apply_temperature(probs[:1], 2.0)[0])
    np.testing.assert_allclose(out[sub], apply_temperature(probs[sub], 0.5))
    assert np.isnan(out[3]).all() and 3 in spinal
    foramen = [t for t, (c, _) in enumerate(TARGETS) if "foraminal" in c]
    np.testing.assert_allclose(out[foramen], probs[foramen])
    np.testing.assert_allclose(FoldModels(1, None, None).calibrate(probs), probs)  # type: ignore[arg-type]
