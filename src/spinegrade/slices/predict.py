"""Prediction with a slices run: the folds' models as one ensemble, on any folder of its layout.

Per fold: the localiser places each asked target on its slice (Sagittal T1 slices; crops need no
localising), the fold's grader grades the study's crops around *that fold's* points (what its
out-of-fold rows measured), and its probabilities are divided by the fold's temperatures
(`calibration.json`, fitted on the other folds). The ensemble's probabilities are the mean over
the folds; its point for a target is the folds' **medoid** (the fold point nearest, in sum, to the
others'; with two folds, a tie, the one with the higher heatmap peak), with that point's peak as
its confidence. The out-of-fold rows of `slices train` are this code with one uncalibrated fold.

Only the key columns of the tables are read (`truth=False`): a grade or a point cannot leak in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinegrade.config import SlicesConfig
from spinegrade.constants import SEVERITIES, row_id
from spinegrade.dicom.geometry import Volume
from spinegrade.errors import DataError
from spinegrade.grade.calibrate import calibrate_probs
from spinegrade.grade.predict import Grader
from spinegrade.io import write_with
from spinegrade.slices.folder import FOLD_JSON, PREDICTED_POINTS, SUBMISSION, SlicesRun
from spinegrade.slices.grade import grade, grade_at, load_volumes, located_crops, slice_files
from spinegrade.slices.inputs import (
    AXIAL_CONDITIONS,
    CROPS,
    POINT_KEYS,
    SLICES,
    TARGETS_OF_MODE,
    Folder,
    SliceFolder,
    open_folder,
)
from spinegrade.slices.localize import Prepared, SliceLocalizer
from spinegrade.training.device import resolve_device

#: Columns of a predicted points table (`points.csv`, `oof_points.csv` adds `fold`).
POINT_COLUMNS = (*POINT_KEYS, "x", "y", "confidence")


@dataclass
class FoldModels:
    """One fold's models and temperatures (`{}`: uncalibrated): its graders (`slices.graders`)
    are averaged before the temperatures are applied."""

    fold: int
    graders: list[Grader]
    localizer: SliceLocalizer | None
    temperatures: dict[str, float]

    def mean(self, grade_with: Callable[..., np.ndarray], *args: Any, **kwargs: Any) -> np.ndarray:
        """The mean over this fold's graders of `grade_with(grader, *args, **kwargs)`
        (uncalibrated probabilities `(studies, t, 3)`)."""
        return np.mean([grade_with(g, *args, **kwargs) for g in self.graders], axis=0)


def load_folds(
    run: SlicesRun,
    folds: Sequence[int] | None = None,
    device: str = "auto",
    *,
    calibrated: bool = True,
) -> list[FoldModels]:
    """The models of `folds` (default: every complete fold)."""
    done = run.completed_folds()
    wanted = done if folds is None else list(folds)
    if not wanted:
        raise DataError(f"{run.path}: no complete fold yet (no fold_<k>/{FOLD_JSON})")
    n = run.config().slices.graders
    missing = [k for k in wanted if not all(p.is_file() for p in run.grader_models(k, n))]
    if missing:
        raise DataError(f"{run.path}: fold(s) {missing} have not all {n} trained graders")
    dev = resolve_device(device)
    slices = run.mode() == SLICES
    return [
        FoldModels(
            k,
            [Grader.load(p, dev) for p in run.grader_models(k, n)],
            SliceLocalizer.load(run.localizer_model(k), dev) if slices else None,
            run.temperatures(k) if calibrated else {},
        )
        for k in wanted
    ]


def asked(folder: Folder) -> pd.DataFrame:
    """The targets to predict, one row each: `study_id, condition, level` (+ `series_id,
    instance_number` and the slice's `file` for slices), from the key columns only."""
    if isinstance(folder, SliceFolder):
        files = slice_files(folder)
        keys = folder.points[list(POINT_KEYS)].reset_index(drop=True)
        keys["file"] = [files[k] for k in zip(keys.study_id, keys.series_id, keys.instance_number)]
        return keys
    crops = folder.crops
    return pd.DataFrame(
        [(r.study_id, c, r.level) for r in crops.itertuples(index=False) for c in AXIAL_CONDITIONS],
        columns=["study_id", "condition", "level"],
    )


@dataclass
class Prediction:
    """What an ensemble predicts on a folder: the submission rows (`row_id` + severities, one per
    asked target) and, for slices, the points (`POINT_COLUMNS`)."""

    submission: pd.DataFrame
    points: pd.DataFrame | None


def predict_folder(
    models: list[FoldModels],
    folder: Folder,
    volumes: dict[str, Volume],
    cfg: SlicesConfig,
    *,
    prepared: dict[int, Prepared] | None = None,
) -> Prediction:
    """The ensemble of `models` on `folder` (its images read into `volumes`), with the run's
    `cfg` (TTA where crops grade each target, the localiser's decoding on slices); `prepared`
    holds the localiser inputs by input size (computed here when absent, once per size)."""
    keys = asked(folder)
    studies = sorted(int(s) for s in keys["study_id"].unique())
    mode = SLICES if isinstance(folder, SliceFolder) else CROPS
    prepared = {} if prepared is None else prepared
    probs, points = [], []
    files = slice_files(folder) if isinstance(folder, SliceFolder) else {}
    for m in models:
        if isinstance(folder, SliceFolder):
            assert m.localizer is not None
            size = m.localizer.cfg.image_size
            if size not in prepared:
                prepared[size] = Prepared.of(volumes, size)
            found = m.localizer.locate(keys, prepared[size], cfg)
            points.append(found)
            raw = m.mean(grade_at, found, files, volumes, studies, cfg.grade_around_mm)
        else:
            samples = located_crops(folder.crops, volumes, studies, cfg.side_offset)
            raw = m.mean(grade, samples, tta=cfg.tta)
        probs.append(_calibrated(raw, mode, m.temperatures))
    mean = np.mean(probs, axis=0)  # (studies, t, 3)
    submission = submission_rows(keys, studies, mode, mean)
    return Prediction(submission, medoid(points) if points else None)


def grade_points(
    models: list[FoldModels],
    folder: SliceFolder,
    volumes: dict[str, Volume],
    points: pd.DataFrame,
    around_mm: float = 0.0,
) -> pd.DataFrame:
    """Submission rows of the ensemble's graders given `points` (e.g. the true ones) instead of
    the localisers', graded as `slices.grade_around_mm` says (`grade_at`)."""
    keys = asked(folder)
    studies = sorted(int(s) for s in keys["study_id"].unique())
    files = slice_files(folder)
    probs = [
        _calibrated(
            m.mean(grade_at, points, files, volumes, studies, around_mm),
            SLICES,
            m.temperatures,
        )
        for m in models
    ]
    return submission_rows(keys, studies, SLICES, np.mean(probs, axis=0))


def submission_rows(
    keys: pd.DataFrame, studies: list[int], mode: str, probs: np.ndarray
) -> pd.DataFrame:
    """One row per asked target: `row_id` + severities, from `probs (studies, t, 3)`."""
    targets = {t: i for i, t in enumerate(TARGETS_OF_MODE[mode])}
    at = {s: i for i, s in enumerate(studies)}
    rows = probs[
        [at[int(s)] for s in keys["study_id"]],
        [targets[(c, lv)] for c, lv in zip(keys["condition"], keys["level"])],
    ].reshape(-1, len(SEVERITIES))
    ids = [row_id(s, c, lv) for s, c, lv in zip(keys["study_id"], keys["condition"], keys["level"])]
    return pd.DataFrame({"row_id": ids, **{s: rows[:, i] for i, s in enumerate(SEVERITIES)}})


def medoid(points: list[pd.DataFrame]) -> pd.DataFrame:
    """The folds' medoid point of each row (same rows in each table): the fold whose point is
    nearest, in sum, to the other folds' points; ties (always, with two folds) go to the higher
    `confidence`. Returns `POINT_COLUMNS`."""
    xy = np.stack([p[["x", "y"]].to_numpy(dtype=float) for p in points])  # (folds, n, 2)
    conf = np.stack([p["confidence"].to_numpy(dtype=float) for p in points])  # (folds, n)
    spread = np.linalg.norm(xy[:, None] - xy[None, :], axis=-1).sum(axis=1)  # (folds, n)
    best = np.argmin(np.round(spread, 6) - 1e-7 * conf, axis=0)
    n = np.arange(xy.shape[1])
    out = points[0][list(POINT_KEYS)].copy()
    out["x"], out["y"], out["confidence"] = xy[best, n, 0], xy[best, n, 1], conf[best, n]
    return out


def predict(
    run_dir: str | Path,
    data_dir: str | Path,
    out: str | Path,
    *,
    folds: Sequence[int] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every asked target of `data_dir` with the run's folds; write `OUT/submission.csv`
    (and `OUT/points.csv` for slices). Returns what was written and how many rows."""
    run = SlicesRun(run_dir)
    run.check()
    cfg = run.config()
    folder = open_folder(data_dir, run.mode(), truth=False)
    models = load_folds(run, folds, device)
    volumes = load_volumes(folder, cfg, progress)
    result = predict_folder(models, folder, volumes, cfg.slices)
    out = Path(out)
    written = {
        SUBMISSION: write_with(out / SUBMISSION, lambda t: result.submission.to_csv(t, index=False))
    }
    if result.points is not None:
        pts = result.points
        written[PREDICTED_POINTS] = write_with(
            out / PREDICTED_POINTS, lambda t: pts.to_csv(t, index=False)
        )
    return {
        "files": {k: str(v) for k, v in written.items()},
        "rows": len(result.submission),
        "studies": len(folder.studies()),
        "folds": [m.fold for m in models],
    }


def _calibrated(probs: np.ndarray, mode: str, temperatures: dict[str, float]) -> np.ndarray:
    """`probs (studies, t, 3)` with each condition group's temperature applied."""
    if not temperatures:
        return probs
    conditions = [c for c, _ in TARGETS_OF_MODE[mode]] * len(probs)
    flat = calibrate_probs(probs.reshape(-1, len(SEVERITIES)), conditions, temperatures)
    return flat.reshape(probs.shape)
