"""`spinegrade lr-find`: a learning-rate range test of one stage on the training studies of fold 0.

The studies and folds are those `spinegrade train` would use with the same config (labelled studies
that have images, `make_folds` on them); the sweep trains a fresh network of the stage on fold 0's
training studies, as the stage trains it (crops or slices with their augmentation, its loss). The
localiser's two networks (sagittal, axial) are swept one after the other; they share
`localize.optim.lr`, so the suggested value is the lower of their two suggestions. Writes
`lr_find_<stage>.png` (loss against learning rate) and `lr_find_<stage>.json` (the curves).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from spinegrade.config import Config, to_dict
from spinegrade.cv.train import load_labels
from spinegrade.data.folds import make_folds
from spinegrade.errors import ConfigError, DataError
from spinegrade.grade.dataset import GradeDataset
from spinegrade.grade.train import (
    augment_params,
    build_model,
    consistency_set,
    crop_params,
    iter_studies,
    loss_function,
)
from spinegrade.grade.train import forward as grade_forward
from spinegrade.io import write_json
from spinegrade.localize.train import NETS, build_net, heatmap_loss, heatmap_sets
from spinegrade.report.training_figures import lr_finder
from spinegrade.training.device import resolve_device
from spinegrade.training.lr_find import LRCurve, lr_sweep

STAGES = ("grade", "localize")
#: The fold whose training studies are swept.
FOLD = 0


@dataclass
class LRFindResult:
    """The sweeps of one stage, the value to use, and the files written."""

    stage: str
    curves: dict[str, LRCurve]
    suggestion: float
    train_studies: int
    figure: Path
    curves_json: Path

    @property
    def override(self) -> str:
        """The config override that sets the suggested learning rate."""
        return f"{self.stage}.optim.lr={self.suggestion:.3g}"


def find_lr(
    data_root: str | Path,
    out_dir: str | Path,
    cfg: Config,
    stage: str,
    *,
    start: float = 1e-6,
    end: float = 1.0,
    steps: int = 100,
    progress: bool = True,
) -> LRFindResult:
    """Sweep the learning rate of `stage` (`grade` or `localize`) on fold 0's training studies and
    write the figure and the curves into `out_dir` (studies cached in `data.cache_dir`, else
    `out_dir/cache`)."""
    if stage not in STAGES:
        raise ConfigError(f"--stage {stage!r}: expected one of {', '.join(STAGES)}")
    if not 0 < start < end or steps < 2:
        raise ConfigError(
            f"LR sweep from {start:g} to {end:g} in {steps} steps: need 0 < start < end, steps >= 2"
        )
    data_root, out_dir = Path(data_root), Path(out_dir)
    tables, labels, _ = load_labels(data_root, cfg, progress)
    folds = make_folds(labels, cfg.data.folds, cfg.data.seed)
    train_ids = folds.loc[folds["fold"] != FOLD, "study_id"].astype(int).tolist()
    cache_dir = Path(cfg.data.cache_dir or out_dir / "cache")
    device = resolve_device(cfg.device)
    sweep = partial(
        lr_sweep,
        device=device,
        start=start,
        end=end,
        steps=steps,
        seed=cfg.data.seed,
        progress=progress,
    )
    torch.manual_seed(cfg.data.seed)
    curves: dict[str, LRCurve] = {}
    if stage == "grade":
        gcfg = cfg.grade
        data = _grade_set(
            data_root, train_ids, tables.coordinates, labels, cfg, cache_dir, progress
        )
        curves["grader"] = sweep(
            build_model(gcfg),
            data,
            loss_function(gcfg),
            gcfg.optim,
            forward=grade_forward,
            num_workers=cfg.data.num_workers,
        )
    else:
        lcfg = cfg.localize
        sets = heatmap_sets(data_root, train_ids, cfg, cache_dir, progress=progress)
        for sub, channels, _ in NETS:
            curves[sub] = sweep(
                build_net(lcfg, channels), sets[sub], heatmap_loss(lcfg.pos_weight), lcfg.optim
            )
    suggestion = min(c.suggestion for c in curves.values())
    figure = lr_finder(
        {k: c.to_dict() for k, c in curves.items()},
        out_dir / f"lr_find_{stage}.png",
        f"LR range test, {stage}: {len(train_ids)} training studies of fold {FOLD} "
        f"(config {cfg.name})\nsuggested {stage}.optim.lr = {suggestion:.3g}",
    )
    curves_json = write_json(
        out_dir / f"lr_find_{stage}.json",
        _summary(stage, cfg, data_root, train_ids, curves, suggestion),
    )
    return LRFindResult(stage, curves, suggestion, len(train_ids), figure, curves_json)


def _grade_set(
    data_root: Path,
    study_ids: list[int],
    coordinates: pd.DataFrame | None,
    labels: pd.DataFrame,
    cfg: Config,
    cache_dir: Path,
    progress: bool,
) -> GradeDataset:
    """The grader's training set of `study_ids`: augmented crops from the true points (with their
    mirrored twins when `grade.consistency_weight` > 0, so the sweep's loss is training's)."""
    assert coordinates is not None
    failed: dict[int, str] = {}
    source = iter_studies(
        data_root,
        study_ids,
        cache_dir,
        failed=failed,
        workers=cfg.data.num_workers,
        progress=progress,
    )
    gcfg = cfg.grade
    data = GradeDataset.from_studies(
        source, coordinates, labels, crop_params(gcfg), augment_params(gcfg)
    )
    for sid, why in failed.items():
        tqdm.write(f"skipped study {sid}: {why}")
    if len(data) == 0:
        raise DataError(f"{data_root}: none of the {len(study_ids)} training studies could be read")
    return consistency_set(gcfg, data)


def _summary(
    stage: str,
    cfg: Config,
    data_root: Path,
    train_ids: list[int],
    curves: dict[str, LRCurve],
    suggestion: float,
) -> dict[str, Any]:
    return {
        "stage": stage,
        "data_root": str(data_root.resolve()),
        "fold": FOLD,
        "train_studies": len(train_ids),
        "suggested_lr": suggestion,
        "rule": "per network: the steepest descent of the smoothed loss (else its minimum / 10); "
        "the lowest of the networks' values",
        "optim": to_dict(getattr(cfg, stage).optim),
        "networks": {name: c.to_dict() for name, c in curves.items()},
    }
