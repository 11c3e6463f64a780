"""Training stage 1 from the coordinates table: cache the studies, build slice samples, fit both
nets.

`train_localizer` is what the training orchestrator calls once per fold; it is resumable (the shared
loop keeps `last.pt` in each model folder, and a finished model folder is not trained again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from spinegrade.config import Config, LocalizeConfig, to_dict
from spinegrade.data.cache import cache_studies, load_cached
from spinegrade.data.tables import load_tables
from spinegrade.errors import DataError
from spinegrade.localize.dataset import (
    AXIAL_CHANNELS,
    SAGITTAL_CHANNELS,
    HeatmapDataset,
    SliceSample,
    axial_samples,
    sagittal_samples,
    world_points,
)
from spinegrade.localize.model import HeatmapNet, HeatmapSpec
from spinegrade.localize.predict import AXIAL_DIR, SAGITTAL_DIR
from spinegrade.training.device import resolve_device
from spinegrade.training.loop import fit
from spinegrade.training.selection import Selection, split_for


@dataclass
class SampleSet:
    """Prepared stacks and slice samples of many studies, for one of the two networks."""

    stacks: list[np.ndarray]
    samples: list[SliceSample]

    def add(self, stacks: list[np.ndarray], samples: list[SliceSample]) -> None:
        offset = len(self.stacks)
        self.stacks.extend(stacks)
        for s in samples:
            s.stack += offset
        self.samples.extend(samples)


def heatmap_loss(pos_weight: float):  # type: ignore[no-untyped-def]
    """BCE between logits `(b, k, h, w)` and Gaussian targets, weighted `1 + pos_weight * target`,
    counted only on supervised channels (`batch["mask"] (b, k)`), averaged per supervised map."""

    def loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        target, mask = batch["target"], batch["mask"][:, :, None, None]
        weight = (1.0 + pos_weight * target) * mask
        bce = F.binary_cross_entropy_with_logits(
            logits.float(), target, weight=weight, reduction="sum"
        )
        return bce / (mask.sum() * target.shape[-1] * target.shape[-2]).clamp_min(1.0)

    return loss


def build_samples(
    cache_paths: dict[int, Path], coords: pd.DataFrame, cfg: LocalizeConfig, progress: bool = True
) -> tuple[SampleSet, SampleSet]:
    """Sagittal and axial sample sets of the cached studies (labels from `coords`)."""
    sag, ax = SampleSet([], []), SampleSet([], [])
    by_study = dict(tuple(coords.groupby("study_id")))
    for sid, path in tqdm(
        sorted(cache_paths.items()), desc="localize samples", disable=not progress
    ):
        rows = by_study.get(sid)
        if rows is None:
            continue
        study = load_cached(path)
        pts = world_points(study, rows)
        sag.add(*sagittal_samples(study, pts, cfg.image_size, cfg.slice_sigma))
        ax.add(*axial_samples(study, pts, cfg.image_size, cfg.slice_sigma))
    return sag, ax


def build_net(cfg: LocalizeConfig, channels: int) -> HeatmapNet:
    """A heatmap network as the config says."""
    return HeatmapNet(
        HeatmapSpec(
            cfg.backbone,
            channels,
            stride=cfg.heatmap_stride,
            width=cfg.decoder_width,
            pretrained=cfg.pretrained,
        )
    )


#: (subfolder, heatmap channels, left/right channel pairs a horizontal flip swaps) of each network.
NETS: tuple[tuple[str, int, tuple[tuple[int, int], ...]], ...] = (
    (SAGITTAL_DIR, SAGITTAL_CHANNELS, ()),
    (AXIAL_DIR, AXIAL_CHANNELS, ((0, 1),)),
)


def heatmap_sets(
    data_root: str | Path,
    study_ids: list[int],
    cfg: Config,
    cache_dir: str | Path,
    *,
    augment: bool = True,
    progress: bool = True,
) -> dict[str, HeatmapDataset]:
    """The sagittal and axial slice datasets of `study_ids` (keyed by `NETS` subfolder).

    Studies are cached in `cache_dir` first; unreadable studies are skipped and listed. Raises
    DataError when the studies give no labelled sagittal or axial slice.
    """
    data_root, lcfg = Path(data_root), cfg.localize
    tables = load_tables(data_root)
    assert tables.coordinates is not None
    cached = cache_studies(
        data_root / "train_images",
        study_ids,
        cache_dir,
        tables.series,
        workers=cfg.data.num_workers,
        progress=progress,
    )
    for sid, why in cached.failed.items():
        tqdm.write(f"skipped study {sid}: {why}")
    sag, ax = build_samples(cached.paths, tables.coordinates, lcfg, progress)
    if not sag.samples or not ax.samples:
        raise DataError(
            f"{data_root}: no labelled sagittal or axial slices among {len(study_ids)} studies"
        )
    sets = {SAGITTAL_DIR: sag, AXIAL_DIR: ax}
    return {
        sub: HeatmapDataset(
            sets[sub].stacks,
            sets[sub].samples,
            lcfg.image_size,
            lcfg.heatmap_stride,
            lcfg.sigma_px,
            augment=augment,
            flip_pairs=flips,
        )
        for sub, _, flips in NETS
    }


def train_localizer(
    data_root: str | Path,
    study_ids: list[int],
    out_dir: str | Path,
    cfg: Config,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train the sagittal and axial heatmap nets on `study_ids` of the RSNA folder `data_root`.

    Studies are cached in `cache_dir` (default `cfg.data.cache_dir`, else `<out_dir>/../cache`);
    unreadable studies are skipped and listed. With `localize.optim.early_stopping` an inner fold
    of `study_ids` chooses each net's epoch and the rest is trained on. Writes
    `<out_dir>/sagittal/` and `<out_dir>/axial/` (checkpoints, history) and returns `out_dir`,
    which `Localizer.load` reads.
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    cache_dir = Path(cache_dir or cfg.data.cache_dir or out_dir.parent / "cache")
    lcfg = cfg.localize
    labels = load_tables(data_root).labels
    assert labels is not None
    fit_ids, select_ids = split_for(lcfg.optim, study_ids, labels, cfg.data.seed)
    train_sets = heatmap_sets(data_root, fit_ids, cfg, cache_dir, progress=progress)
    inner = (
        heatmap_sets(data_root, select_ids, cfg, cache_dir, augment=False, progress=progress)
        if select_ids
        else {}
    )
    device = resolve_device(cfg.device)
    loss = heatmap_loss(lcfg.pos_weight)
    meta = {"localize": to_dict(lcfg)}
    for sub, channels, _ in NETS:
        net = build_net(lcfg, channels)
        fit(
            net,
            train_sets[sub],
            None,
            loss,
            lcfg.optim,
            out_dir / sub,
            device=device,
            num_workers=0,
            desc=f"localize {sub}",
            seed=cfg.data.seed,
            meta={**meta, "spec": net.spec.to_dict(), "samples": len(train_sets[sub])},
            progress=progress,
            select=Selection(inner[sub], select_ids) if inner else None,
        )
    return out_dir


def fold_split(data_root: str | Path, cfg: Config, fold: int) -> tuple[list[int], list[int]]:
    """`(train_ids, held_out_ids)` of `fold` under `make_folds(labels, cfg.data.folds,
    cfg.data.seed)`.

    Only studies with label coordinates count; `cfg.data.max_studies` keeps the first N of them.
    """
    from spinegrade.data.folds import make_folds

    tables = load_tables(data_root)
    assert tables.labels is not None and tables.coordinates is not None
    labels = tables.labels[tables.labels.study_id.isin(tables.coordinates.study_id)]
    labels = labels.sort_values("study_id")
    if cfg.data.max_studies is not None:
        labels = labels.head(cfg.data.max_studies)
    if not 0 <= fold < cfg.data.folds:
        raise DataError(f"fold {fold} does not exist: data.folds is {cfg.data.folds}")
    folds = make_folds(labels, cfg.data.folds, cfg.data.seed)
    held = folds.study_id[folds.fold == fold].astype(int).tolist()
    rest = folds.study_id[folds.fold != fold].astype(int).tolist()
    return rest, held
