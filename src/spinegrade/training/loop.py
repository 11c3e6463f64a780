"""The training loop both stages use: AdamW with warm-up + cosine, AMP on CUDA, EMA, gradient
clipping, DDP under torchrun, progress bars, and atomic checkpoints that resume mid-run; optionally
early stopping on an inner split (`training.selection`), weighted draws (`training.sampling`) and
TensorBoard scalars (`training.logs`).

A stage supplies a model, datasets yielding dicts of tensors, a `forward(model, batch)` and a
`loss_fn(output, batch) -> scalar` (or `(scalar, parts)`, see `LossFn`). The loop owns everything
else.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler
from tqdm.auto import tqdm

from spinegrade.config import OptimConfig
from spinegrade.errors import ConfigError, DataError
from spinegrade.io import write_json
from spinegrade.training import distributed
from spinegrade.training.checkpoint import load_checkpoint, save_checkpoint
from spinegrade.training.logs import TB_DIR, ScalarLog
from spinegrade.training.sampling import WeightedDistributedSampler
from spinegrade.training.selection import SELECTION_JSON, Selection, selection_record

Batch = dict[str, Any]
Forward = Callable[[nn.Module, Batch], Any]
#: The loss to minimise, a scalar tensor; or `(loss, parts)` with `parts` named scalar tensors
#: (terms of the loss) that training logs: `train/<name>` per step and `train_<name>`, their mean
#: over the epoch, in its history record. Evaluation uses the loss alone.
LossFn = Callable[[Any, Batch], torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor]]]

LAST = "last.pt"
FINAL = "model.pt"
HISTORY = "history.json"


@dataclass
class FitResult:
    """What `fit` leaves behind: per-epoch history and the final weights' path."""

    history: list[dict[str, float]]
    checkpoint: Path
    resumed_from_epoch: int = 0  #: epochs already done when this call started (0 = fresh)
    timings: dict[str, float] = field(default_factory=dict)  #: data vs compute seconds, samples/s
    selected_epoch: int | None = None  #: the epoch whose weights were kept (with a `Selection`)


def default_forward(model: nn.Module, batch: Batch) -> Any:
    """`model(batch["image"])`."""
    return model(batch["image"])


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    loss_fn: LossFn,
    optim: OptimConfig,
    out_dir: str | Path,
    *,
    device: torch.device,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Batch] | None = None,
    forward: Forward = default_forward,
    desc: str = "train",
    seed: int = 0,
    meta: Mapping[str, Any] | None = None,
    progress: bool = True,
    select: Selection | None = None,
    sample_weights: Sequence[float] | None = None,
) -> FitResult:
    """Train `model` in place for `optim.epochs` epochs and return its history.

    Resumes from `out_dir/last.pt` when present; when `out_dir/model.pt` exists the run is complete
    and only the weights are loaded. `meta` is stored in `model.pt` (e.g. the model's build args).
    `val_set` is only watched (`val_loss` per epoch). `select` (which `optim.early_stopping`
    requires) chooses the epoch: its loss (`select_loss`) picks the weights that are kept (the EMA
    weights when there is an EMA), training stops after `optim.patience` epochs without a better
    one (0: never), and `selection.json` records the epoch and the inner studies. With
    `sample_weights` (one per training sample) each epoch draws `len(train_set)` samples with
    replacement in proportion to them. `optim.tensorboard` writes the scalars to `out_dir/tb/`.
    Under torchrun every process calls `fit`; only rank 0 writes files and shows progress (a bar per
    epoch unless `progress` is False).
    """
    out_dir = Path(out_dir)
    info = distributed.current()
    final_path = out_dir / FINAL
    if final_path.is_file():
        state = load_checkpoint(final_path)
        model.load_state_dict(state["model"])
        model.to(device)
        chosen = (state.get("selection") or {}).get("epoch")
        return FitResult(state.get("history", []), final_path, optim.epochs, selected_epoch=chosen)
    if optim.early_stopping and select is None:
        raise ConfigError(
            f"{out_dir}: optim.early_stopping is on, but no inner split was given to select with"
        )
    if select is not None and len(select) == 0:
        raise DataError(f"{out_dir}: the inner split that selects the epoch has no samples")

    model.to(device)
    ema = _make_ema(model, optim.ema_decay)
    train_model: nn.Module = model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids)

    sampler = _sampler(train_set, seed, sample_weights)
    loader = DataLoader(
        train_set,
        batch_size=optim.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=len(train_set) > optim.batch_size * max(info.world_size, 1),  # type: ignore[arg-type]
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    steps_per_epoch = max(len(loader), 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        _warmup_cosine(optim.warmup_epochs * steps_per_epoch, optim.epochs * steps_per_epoch),
    )

    history: list[dict[str, float]] = []
    start_epoch = 0
    best: dict[str, Any] | None = None  #: epoch, loss and weights of the best `select_loss`
    if (out_dir / LAST).is_file():
        state = load_checkpoint(out_dir / LAST, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history, start_epoch, best = state["history"], state["epoch"], state.get("best")

    use_amp = optim.amp and device.type == "cuda"
    timings = {"data_s": 0.0, "compute_s": 0.0, "samples": 0.0}
    step = StepConfig(loss_fn, forward, optim.grad_clip, device, use_amp)
    log = ScalarLog(
        out_dir / TB_DIR if optim.tensorboard and info.is_main else None,
        purge_step=start_epoch * steps_per_epoch + 1,  # the first step this call logs
    )
    try:
        for epoch in range(start_epoch, optim.epochs):
            _seed_everything(seed + epoch + 1000 * info.rank)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            else:
                sampler.generator = torch.Generator().manual_seed(seed + epoch)
            train_loss, parts, epoch_t = _train_one_epoch(
                train_model,
                ema,
                loader,
                step,
                optimizer,
                scheduler,
                f"{desc} {epoch + 1}/{optim.epochs}",
                info.is_main and progress,
                timings,
                log,
            )
            record = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                **{f"train_{k}": v for k, v in parts.items()},
                "lr": scheduler.get_last_lr()[0],
                "seconds": epoch_t,
            }
            eval_model = ema.module if ema is not None else model
            if val_set is not None and len(val_set) > 0:  # type: ignore[arg-type]
                record["val_loss"] = evaluate_loss(
                    eval_model, val_set, loss_fn, forward, device, optim.batch_size, collate_fn
                )
            if select is not None:
                loss = evaluate_loss(
                    eval_model,
                    select.dataset,
                    loss_fn,
                    forward,
                    device,
                    optim.batch_size,
                    collate_fn,
                )
                record["select_loss"] = distributed.broadcast_object(loss)  # one decision for all
                best = _better(best, epoch + 1, record["select_loss"], eval_model)
            history.append(record)
            log.add(record, (epoch + 1) * steps_per_epoch, "epoch")
            if info.is_main:
                save_checkpoint(
                    out_dir / LAST,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "ema": ema.state_dict() if ema is not None else None,
                        "epoch": epoch + 1,
                        "history": history,
                        "best": best,
                    },
                )
                write_json(out_dir / HISTORY, history)
            distributed.barrier()
            if best is not None and 0 < optim.patience <= epoch + 1 - best["epoch"]:
                break
    finally:
        log.close()

    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    selection = None
    if select is not None and best is not None:
        model.load_state_dict(best["model"])
        selection = selection_record(history, optim.epochs, optim.patience, select.study_ids)
    if info.is_main:
        save_checkpoint(
            final_path,
            {
                "model": model.state_dict(),
                "history": history,
                "meta": dict(meta or {}),
                "selection": selection,
            },
        )
        write_json(out_dir / HISTORY, history)
        if selection is not None:
            write_json(out_dir / SELECTION_JSON, selection)
        (out_dir / LAST).unlink(missing_ok=True)
    distributed.barrier()
    if timings["samples"]:
        total = timings["data_s"] + timings["compute_s"]
        timings["samples_per_s"] = timings["samples"] / max(total, 1e-9)
    chosen = selection["epoch"] if selection else None
    return FitResult(history, final_path, start_epoch, timings, selected_epoch=chosen)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    dataset: Dataset,
    loss_fn: LossFn,
    forward: Forward,
    device: torch.device,
    batch_size: int,
    collate_fn: Callable[[list[Any]], Batch] | None = None,
) -> float:
    """Mean of `loss_fn` over `dataset` (weighted by batch size), model in eval mode."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        n = _batch_len(batch)
        total += float(split_loss(loss_fn(forward(model, batch), batch))[0]) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) dict/list batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


@dataclass(frozen=True)
class StepConfig:
    """What one optimiser step needs besides the model, its optimiser and the batch."""

    loss_fn: LossFn
    forward: Forward
    grad_clip: float
    device: torch.device
    use_amp: bool


def split_loss(
    result: torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor]],
) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
    """A `LossFn`'s result as `(loss, parts)` (no parts for a bare loss)."""
    return result if isinstance(result, tuple) else (result, {})


def train_step(
    model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, step: StepConfig
) -> tuple[float, dict[str, float]]:
    """One optimiser step on `batch` (already on the device): forward under autocast, backward,
    gradient clipping, `optimizer.step()`; returns the loss and its named parts (see `LossFn`)."""
    with torch.autocast(device_type=step.device.type, dtype=torch.bfloat16, enabled=step.use_amp):
        loss, parts = split_loss(step.loss_fn(step.forward(model, batch), batch))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if step.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), step.grad_clip)
    optimizer.step()
    return float(loss.detach()), {k: float(v.detach()) for k, v in parts.items()}


def _train_one_epoch(
    model: nn.Module,
    ema: AveragedModel | None,
    loader: DataLoader,
    step: StepConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    label: str,
    show: bool,
    timings: dict[str, float],
    log: ScalarLog,
) -> tuple[float, dict[str, float], float]:
    """(mean loss, mean of each named part of the loss, seconds) of one epoch of training."""
    model.train()
    total, count = 0.0, 0
    part_totals: dict[str, float] = {}
    start = tick = time.perf_counter()
    bar = tqdm(loader, desc=label, disable=not show, leave=False, dynamic_ncols=True)
    for batch in bar:
        loaded = time.perf_counter()
        batch = to_device(batch, step.device)
        lr = scheduler.get_last_lr()[0]
        loss, parts = train_step(model, batch, optimizer, step)
        scheduler.step()
        if ema is not None:
            ema.update_parameters(
                model.module if isinstance(model, DistributedDataParallel) else model
            )
        n = _batch_len(batch)
        total += loss * n
        count += n
        for key, value in parts.items():
            part_totals[key] = part_totals.get(key, 0.0) + value * n
        log.add({"loss": loss, "lr": lr, **parts}, scheduler.last_epoch, "train")
        bar.set_postfix(loss=f"{total / count:.4f}")
        now = time.perf_counter()
        timings["data_s"] += loaded - tick
        timings["compute_s"] += now - loaded
        timings["samples"] += n
        tick = now
    means = {k: v / max(count, 1) for k, v in part_totals.items()}
    return total / max(count, 1), means, time.perf_counter() - start


def _sampler(train_set: Dataset, seed: int, sample_weights: Sequence[float] | None) -> Sampler[int]:
    """Weighted draws when `sample_weights` are given, else a shuffle (split across ranks under
    torchrun)."""
    if sample_weights is not None:
        if len(sample_weights) != len(train_set):  # type: ignore[arg-type]
            raise ValueError(
                f"{len(sample_weights)} sample weights for {len(train_set)} samples"  # type: ignore[arg-type]
            )
        return WeightedDistributedSampler(sample_weights, seed=seed)
    if distributed.current().enabled:
        return DistributedSampler(train_set, shuffle=True, seed=seed, drop_last=False)
    return RandomSampler(train_set, generator=torch.Generator().manual_seed(seed))


def _better(
    best: dict[str, Any] | None, epoch: int, loss: float, model: nn.Module
) -> dict[str, Any] | None:
    """`best`, or this epoch, its loss and a CPU copy of `model`'s weights when `loss` is lower
    (the first of equal losses is kept)."""
    if best is not None and loss >= best["loss"]:
        return best
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"epoch": epoch, "loss": loss, "model": weights}


def _make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _warmup_cosine(warmup_steps: float, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine decay to 1% at `total_steps`."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_len(batch[0])
    return 1


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
