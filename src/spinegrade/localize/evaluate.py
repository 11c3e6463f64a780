"""Localisation report on out-of-fold studies: model and mean-position baseline, in the same run.

Per predicted point with a true point of the same study/condition/level (`world_points`):
- in-plane error (mm): the world distance with its component along the true slice normal removed;
- slice error (slices): that component divided by the true stack's slice spacing, rounded;
- level right: the nearest true point (3D) of the same condition in the study has the same level;
- left/right swap (lateral conditions): the point is nearer the true point of the *other* side at
  that level than to its own.
Targets with a true point and no prediction (`reason` set) are counted as `missed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from spinegrade.config import Config
from spinegrade.constants import (
    CONDITION_GROUPS,
    CONDITION_LABELS,
    CONDITIONS,
    GROUP_OF_CONDITION,
    LEVEL_LABELS,
    LEVELS,
    MIRROR_CONDITION,
)
from spinegrade.data.cache import cache_studies, load_cached
from spinegrade.data.tables import load_tables
from spinegrade.io import write_json, write_with
from spinegrade.localize.baseline import MeanPositionBaseline
from spinegrade.localize.dataset import world_points
from spinegrade.localize.predict import Localizer
from spinegrade.report.training_figures import localization_bars

REPORT_JSON, REPORT_PNG, PREDICTIONS_CSV = (
    "localize_report.json",
    "localize_report.png",
    "predictions.csv",
)


def point_errors(pred: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per true point: `study_id, condition, level, located, inplane_mm, slice_error,
    level_ok, swap` (NaN/False where not located). `truth` is `world_points` plus `study_id`."""
    truth = truth.drop_duplicates(["study_id", "condition", "level"])
    merged = truth.merge(
        pred[["study_id", "condition", "level", "world_x", "world_y", "world_z", "reason"]],
        on=["study_id", "condition", "level"],
        how="left",
    )
    p = merged[["world_x", "world_y", "world_z"]].to_numpy(dtype=float)
    t = merged[["wx", "wy", "wz"]].to_numpy(dtype=float)
    n = merged[["nx", "ny", "nz"]].to_numpy(dtype=float)
    d = p - t
    along = (d * n).sum(axis=1)
    out = merged[["study_id", "condition", "level"]].copy()
    out["located"] = np.isfinite(p).all(axis=1)
    out["inplane_mm"] = np.sqrt(np.maximum((d**2).sum(axis=1) - along**2, 0.0))
    out["slice_error"] = np.rint(np.abs(along) / merged["dz"].to_numpy(dtype=float))
    out["level_ok"] = [_level_ok(truth, r, pp) for r, pp in zip(out.itertuples(index=False), p)]
    out["swap"] = [_swapped(truth, r, pp) for r, pp in zip(out.itertuples(index=False), p)]
    return out


def _level_ok(truth: pd.DataFrame, r: Any, p: np.ndarray) -> bool:
    if not np.isfinite(p).all():
        return False
    same = truth[(truth.study_id == r.study_id) & (truth.condition == r.condition)]
    dist = np.linalg.norm(same[["wx", "wy", "wz"]].to_numpy() - p, axis=1)
    return bool(same["level"].iloc[int(dist.argmin())] == r.level)


def _swapped(truth: pd.DataFrame, r: Any, p: np.ndarray) -> bool:
    mirror = MIRROR_CONDITION[r.condition]
    if mirror == r.condition or not np.isfinite(p).all():
        return False
    at = truth[(truth.study_id == r.study_id) & (truth.level == r.level)]
    own, other = at[at.condition == r.condition], at[at.condition == mirror]
    if own.empty or other.empty:
        return False
    d_own = np.linalg.norm(own[["wx", "wy", "wz"]].to_numpy()[0] - p)
    d_other = np.linalg.norm(other[["wx", "wy", "wz"]].to_numpy()[0] - p)
    return bool(d_other < d_own)


def summarize(errors: pd.DataFrame) -> dict[str, Any]:
    """Figures per condition and level, per condition group, and overall."""

    def stats(e: pd.DataFrame) -> dict[str, Any]:
        found = e[e.located]
        mm = found["inplane_mm"].to_numpy()
        return {
            "points": int(len(e)),
            "missed": int((~e.located).sum()),
            "inplane_mm_median": float(np.median(mm)) if len(mm) else None,
            "inplane_mm_p90": float(np.percentile(mm, 90)) if len(mm) else None,
            "slice_exact": float((found.slice_error == 0).mean()) if len(found) else None,
            "slice_within_1": float((found.slice_error <= 1).mean()) if len(found) else None,
            "level_right": float(found.level_ok.mean()) if len(found) else None,
            "swaps": int(found.swap.sum()),
        }

    group = errors.condition.map(GROUP_OF_CONDITION)
    return {
        "overall": stats(errors),
        "groups": {g: stats(errors[group == g]) for g in CONDITION_GROUPS},
        "conditions": {c: stats(errors[errors.condition == c]) for c in CONDITIONS},
        "targets": {
            f"{c}_{lv}": stats(errors[(errors.condition == c) & (errors.level == lv)])
            for c in CONDITIONS
            for lv in LEVELS
        },
    }


def to_coordinates_csv(pred: pd.DataFrame, path: str | Path) -> Path:
    """Write a `locate` table with train_label_coordinates.csv spellings of condition and level."""
    out = pred.copy()
    out["condition"] = out["condition"].map(CONDITION_LABELS)
    out["level"] = out["level"].map(LEVEL_LABELS)
    return write_with(path, lambda tmp: out.to_csv(tmp, index=False))


def evaluate_localizer(
    data_root: str | Path,
    model_dir: str | Path,
    eval_ids: list[int],
    train_ids: list[int],
    out_dir: str | Path,
    cfg: Config,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Locate `eval_ids` with the model in `model_dir` and with the baseline fitted on `train_ids`.

    Writes `localize_report.json`, `localize_report.png` and `predictions.csv` (model) to `out_dir`
    and returns the report. Studies that cannot be read are skipped and listed in the report.
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    cache_dir = Path(cache_dir or cfg.data.cache_dir or Path(model_dir).parent / "cache")
    tables = load_tables(data_root)
    coords = tables.coordinates
    assert coords is not None
    cached = cache_studies(
        data_root / "train_images",
        sorted(set(eval_ids) | set(train_ids)),
        cache_dir,
        tables.series,
        workers=cfg.data.num_workers,
        progress=progress,
    )
    by_study = dict(tuple(coords.groupby("study_id")))
    empty = coords.iloc[:0]

    def labelled(sid: int) -> tuple:  # type: ignore[type-arg]
        study = load_cached(cached.paths[sid])
        return study, world_points(study, by_study.get(sid, empty))

    baseline = MeanPositionBaseline.fit([labelled(s) for s in train_ids if s in cached.paths])
    localizer = Localizer.load(model_dir, cfg.device)
    preds, base, truth = [], [], []
    for sid in tqdm(
        [s for s in eval_ids if s in cached.paths], desc="localize evaluate", disable=not progress
    ):
        study, pts = labelled(sid)
        preds.append(localizer.locate(study))
        base.append(baseline.locate(study))
        truth.append(pts.assign(study_id=study.study_id))
    pred_df, base_df, truth_df = pd.concat(preds), pd.concat(base), pd.concat(truth)
    report = {
        "studies": len(preds),
        "skipped": {str(k): v for k, v in cached.failed.items()},
        "model": summarize(point_errors(pred_df, truth_df)),
        "baseline": summarize(point_errors(base_df, truth_df)),
        "not_located": pred_df.loc[pred_df.reason != "", "reason"].value_counts().to_dict(),
    }
    write_json(out_dir / REPORT_JSON, report)
    localization_bars(report, out_dir / REPORT_PNG)
    to_coordinates_csv(pred_df, out_dir / PREDICTIONS_CSV)
    return report
