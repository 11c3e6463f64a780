"""Training the grader on crops from the true coordinates (with jitter), through the shared loop.

`train_grader` is what the training orchestrator calls once per fold. It is resumable: the loop
keeps
`last.pt` in `out_dir`, and a finished `model.pt` is not trained again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from spinegrade.config import Config, GradeConfig, to_dict
from spinegrade.constants import TARGETS
from spinegrade.data.cache import cache_studies, load_cached
from spinegrade.data.tables import load_tables
from spinegrade.dicom import Study, load_study
from spinegrade.errors import ConfigError, DataError, SpinegradeError
from spinegrade.grade.augment import AugmentParams, mirror_index
from spinegrade.grade.dataset import CropParams, GradeDataset
from spinegrade.grade.loss import grade_loss, mirror_consistency
from spinegrade.grade.model import GraderNet, GraderSpec
from spinegrade.training import distributed
from spinegrade.training.checkpoint import load_checkpoint, save_checkpoint
from spinegrade.training.device import resolve_device
from spinegrade.training.loop import LossFn, fit, to_device
from spinegrade.training.sampling import excess_weights
from spinegrade.training.selection import Selection, split_for


def crop_params(cfg: GradeConfig) -> CropParams:
    """The crop geometry and views of a grade config."""
    return CropParams(
        slices=cfg.slices,
        crop_mm=cfg.crop_mm,
        crop_px=cfg.crop_px,
        views=cfg.views,
        view_distance_mm=cfg.view_distance_mm,
    )


def augment_params(cfg: GradeConfig) -> AugmentParams:
    """The training augmentation of a grade config."""
    return AugmentParams(
        coord_jitter_mm=cfg.coord_jitter_mm,
        slice_shift=cfg.slice_shift,
        angle_deg=cfg.angle_deg,
        scale=cfg.scale_jitter,
        mirror_p=cfg.mirror_p,
        intensity_p=cfg.intensity_p,
    )


def build_model(cfg: GradeConfig, targets: Sequence[tuple[str, str]] = TARGETS) -> GraderNet:
    """A grading network as the config says, with one token per target of `targets`."""
    return GraderNet(
        GraderSpec(
            backbone=cfg.backbone,
            in_chans=cfg.slices,
            pretrained=cfg.pretrained,
            dim=cfg.dim,
            context_layers=cfg.context_layers,
            dropout=cfg.dropout,
            targets=tuple(targets),
            views=cfg.views,
        )
    )


def forward(
    model: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The loop's forward: `(crops (b, n, ...), valid (b, n)) -> logits (b, t, 3)` (`n` crop slots).

    A batch with mirrored twins (`twin_crops`, `twin_valid`; `GradeDataset.with_twins`) gives
    `(logits, twin_logits)`, each `(b, t, 3)`, from one pass over the `2b` samples: BatchNorm then
    normalises a study and its twin with the same statistics (and DDP sees one forward per step).
    """
    if "twin_crops" not in batch:
        return model(batch["crops"], batch["valid"])
    b = batch["crops"].shape[0]
    both = model(
        torch.cat([batch["crops"], batch["twin_crops"]]),
        torch.cat([batch["valid"], batch["twin_valid"]]),
    )
    return both[:b], both[b:]


def loss_function(cfg: GradeConfig, targets: Sequence[tuple[str, str]] = TARGETS) -> LossFn:
    """The loop's loss: `grade_loss` of the logits against the batch's labels over `targets`.

    Given `(logits, twin_logits)` (a batch with twins, see `forward`) it is `grade_loss +
    cfg.consistency_weight * mirror_consistency`, returned with both terms as named parts
    (`task`, `consistency`) for the loop's logs.
    """

    def loss(
        out: torch.Tensor | tuple[torch.Tensor, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not isinstance(out, tuple):
            return grade_loss(out, batch["labels"], cfg.any_severe_weight, targets)
        logits, twin = out
        task = grade_loss(logits, batch["labels"], cfg.any_severe_weight, targets)
        term = mirror_consistency(logits, twin, batch["target_valid"], targets)
        return task + cfg.consistency_weight * term, {"task": task, "consistency": term}

    return loss


def check_consistency(cfg: GradeConfig, targets: Sequence[tuple[str, str]] = TARGETS) -> None:
    """ConfigError when `cfg.consistency_weight` is negative, or positive while `targets` lack
    the mirror partner (left <-> right) of some target."""
    weight = cfg.consistency_weight
    if weight < 0:
        raise ConfigError(f"grade.consistency_weight is {weight}: expected 0 (off) or more")
    if weight > 0:
        try:
            mirror_index(targets)
        except ValueError:
            raise ConfigError(
                "grade.consistency_weight > 0 needs the left/right mirror, but these targets do "
                "not hold both sides of every lateral one; use grade.consistency_weight=0"
            ) from None


def consistency_set(cfg: GradeConfig, train_set: GradeDataset) -> GradeDataset:
    """`train_set`, with each study's mirrored twin when `cfg.consistency_weight` > 0 (checked
    by `check_consistency`)."""
    check_consistency(cfg, train_set.targets)
    return train_set.with_twins() if cfg.consistency_weight > 0 else train_set


def iter_studies(
    data_root: str | Path,
    study_ids: list[int],
    cache_dir: str | Path | None = None,
    *,
    failed: dict[int, str],
    workers: int = 0,
    progress: bool = True,
) -> Iterator[tuple[int, Study]]:
    """Yield `(study_id, Study)` one at a time; studies that cannot be read go to `failed` (one
    line).

    With `cache_dir` the studies are read through the study cache (filled first with
    `spinegrade.data.cache.cache_studies`, keyed like the localiser's so both stages share it);
    without, the DICOM is read directly.
    """
    ids = [int(s) for s in study_ids]
    root = Path(data_root)
    images = root / "train_images"
    if cache_dir is not None:
        result = cache_studies(
            images, ids, cache_dir, load_tables(root).series, workers=workers, progress=progress
        )
        failed.update(result.failed)
        for sid in tqdm(
            [s for s in ids if s in result.paths], desc="grade: studies", disable=not progress
        ):
            yield sid, load_cached(result.paths[sid])
        return
    for sid in tqdm(ids, desc="grade: read studies", disable=not progress):
        try:
            yield sid, load_study(images / str(sid))
        except SpinegradeError as exc:
            failed[sid] = str(exc)


def train_grader(
    data_root: str | Path,
    study_ids: list[int],
    coordinates: pd.DataFrame,
    labels: pd.DataFrame,
    out_dir: str | Path,
    cfg: Config,
    *,
    val_ids: list[int] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train the grader on `study_ids` and return the final checkpoint (`<out_dir>/model.pt`).

    Crops come from the TRUE `coordinates` (the coordinates table, snake_case condition/level),
    jittered as `cfg.grade` says; `labels` is the wide labels table. `val_ids` (optional) adds a
    validation loss per epoch on unjittered crops, which selects nothing. With
    `grade.optim.early_stopping` an inner fold of `study_ids` chooses the epoch and the rest is
    trained on; `grade.resample_factor` over-draws studies with moderate and severe targets
    (`spinegrade.training.sampling`). Unreadable studies are skipped and listed.
    """
    gcfg = cfg.grade
    ids = [int(s) for s in study_ids]
    val = [int(s) for s in (val_ids or [])]
    fit_ids, select_ids = split_for(gcfg.optim, ids, labels, cfg.data.seed)
    crop, augment = crop_params(gcfg), augment_params(gcfg)
    failed: dict[int, str] = {}
    source = iter_studies(
        data_root,
        ids + val,
        cache_dir,
        failed=failed,
        workers=cfg.data.num_workers,
        progress=progress,
    )
    everything = GradeDataset.from_studies(source, coordinates, labels, crop, augment)
    for sid, why in failed.items():
        tqdm.write(f"grade: skipped study {sid}: {why}")
    train_set, val_set = everything.split(set(fit_ids), augment), everything.split(set(val), None)
    if len(train_set) == 0:
        raise DataError(f"{data_root}: none of the {len(ids)} training studies could be read")
    inner = everything.split(set(select_ids), None) if select_ids else None
    model = build_model(gcfg)
    meta = {"train_studies": len(train_set), "skipped": failed}
    return fit_grader(
        model, train_set, val_set, out_dir, cfg, inner=inner, meta=meta, progress=progress
    )


def fit_grader(
    model: GraderNet,
    train_set: GradeDataset,
    val_set: GradeDataset | None,
    out_dir: str | Path,
    cfg: Config,
    *,
    inner: GradeDataset | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    seed: int | None = None,
) -> Path:
    """Train `model` on `train_set` through the shared loop (validation loss on `val_set` when it
    is not empty; with `inner`, early stopping on that inner split), then re-estimate its
    BatchNorm statistics; returns `<out_dir>/model.pt`. `seed` (default `data.seed`) seeds the
    loop's draws and augmentation.

    The checkpoint's metadata holds the spec, crop geometry and grade config (what
    `Grader.load` needs) and `meta`. The loss is `grade_loss` over the model's targets, plus
    `grade.consistency_weight` times the mirror-consistency term on the training batches (the
    validation and selection losses stay `grade_loss`); `grade.resample_factor` over-draws samples
    with moderate and severe targets.
    """
    gcfg = cfg.grade
    fit_set = consistency_set(gcfg, train_set)
    factor = gcfg.resample_factor
    full_meta: dict[str, Any] = {
        "spec": model.spec.to_dict(),
        "crop": asdict(train_set.crop),
        "grade": to_dict(gcfg),
        **(meta or {}),
    }
    device = resolve_device(cfg.device)
    result = fit(
        model,
        fit_set,
        val_set if val_set is not None and len(val_set) else None,
        loss_function(gcfg, model.spec.targets),
        gcfg.optim,
        out_dir,
        device=device,
        num_workers=cfg.data.num_workers,
        forward=forward,
        desc="grade",
        seed=cfg.data.seed if seed is None else seed,
        meta=full_meta,
        progress=progress,
        select=Selection(inner, inner.ids) if inner is not None and len(inner) else None,
        sample_weights=excess_weights(train_set.labels, factor) if factor > 0 else None,
    )
    if distributed.current().is_main:
        state = load_checkpoint(result.checkpoint)
        if not state["meta"].get("bn_recalibrated"):
            plain = train_set.split(set(train_set.ids), None)
            recalibrate_batchnorm(model, plain, device, gcfg.optim.batch_size, progress=progress)
            state["model"] = model.state_dict()
            state["meta"]["bn_recalibrated"] = True
            save_checkpoint(result.checkpoint, state)
    distributed.barrier()
    return result.checkpoint


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module,
    dataset: GradeDataset,
    device: torch.device,
    batch_size: int,
    *,
    max_studies: int = 512,
    progress: bool = False,
) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over unaugmented training crops.

    Short runs (and EMA weights) leave running statistics that lag the final weights; in eval mode
    that can ruin predictions that were right in train mode. One forward pass over (at most
    `max_studies`) training studies fixes it.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    subset = Subset(dataset, range(min(len(dataset), max_studies)))
    for batch in tqdm(
        DataLoader(subset, batch_size=batch_size),
        desc="grade: BN statistics",
        disable=not progress,
        leave=False,
    ):
        forward(model, to_device(batch, device))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.train(was_training)
