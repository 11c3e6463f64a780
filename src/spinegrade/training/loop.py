"""The training loop both stages use: AdamW with warm-up + cosine, AMP on CUDA, EMA, gradient
clipping, DDP under torchrun, progress bars, and atomic checkpoints that resume mid-run.

A stage supplies a model, datasets yielding dicts of tensors, a `forward(model, batch)` and a
`loss_fn(output, batch) -> scalar`. The loop owns everything else.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from spinegrade.config import OptimConfig
from spinegrade.io import write_json
from spinegrade.training import distributed
from spinegrade.training.checkpoint import load_checkpoint, save_checkpoint

Batch = dict[str, Any]
Forward = Callable[[nn.Module, Batch], Any]
LossFn = Callable[[Any, Batch], torch.Tensor]

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
) -> FitResult:
    """Train `model` in place for `optim.epochs` epochs and return its history.

    Resumes from `out_dir/last.pt` when present; when `out_dir/model.pt` exists the run is complete
    and only the weights are loaded. `meta` is stored in `model.pt` (e.g. the model's build args).
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
        return FitResult(state.get("history", []), final_path, resumed_from_epoch=optim.epochs)

    model.to(device)
    ema = _make_ema(model, optim.ema_decay)
    train_model: nn.Module = model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids)

    sampler: Any
    if info.enabled:
        sampler = DistributedSampler(train_set, shuffle=True, seed=seed, drop_last=False)
    else:
        sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(seed))
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
    if (out_dir / LAST).is_file():
        state = load_checkpoint(out_dir / LAST, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history, start_epoch = state["history"], state["epoch"]

    use_amp = optim.amp and device.type == "cuda"
    timings = {"data_s": 0.0, "compute_s": 0.0, "samples": 0.0}
    for epoch in range(start_epoch, optim.epochs):
        _seed_everything(seed + epoch + 1000 * info.rank)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        else:
            sampler.generator = torch.Generator().manual_seed(seed + epoch)
        train_loss, epoch_t = _train_one_epoch(
            train_model,
            ema,
            loader,
            loss_fn,
            forward,
            optimizer,
            scheduler,
            optim,
            device,
            use_amp,
            f"{desc} {epoch + 1}/{optim.epochs}",
            info.is_main and progress,
            timings,
        )
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "lr": scheduler.get_last_lr()[0],
            "seconds": epoch_t,
        }
        if val_set is not None and len(val_set) > 0:  # type: ignore[arg-type]
            eval_model = ema.module if ema is not None else model
            record["val_loss"] = evaluate_loss(
                eval_model, val_set, loss_fn, forward, device, optim.batch_size, collate_fn
            )
        history.append(record)
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
                },
            )
            write_json(out_dir / HISTORY, history)
        distributed.barrier()

    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    if info.is_main:
        save_checkpoint(
            final_path, {"model": model.state_dict(), "history": history, "meta": dict(meta or {})}
        )
        write_json(out_dir / HISTORY, history)
        (out_dir / LAST).unlink(missing_ok=True)
    distributed.barrier()
    if timings["samples"]:
        total = timings["data_s"] + timings["compute_s"]
        timings["samples_per_s"] = timings["samples"] / max(total, 1e-9)
    return FitResult(history, final_path, resumed_from_epoch=start_epoch, timings=timings)


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
        total += float(loss_fn(forward(model, batch), batch)) * n
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


def _train_one_epoch(
    model: nn.Module,
    ema: AveragedModel | None,
    loader: DataLoader,
    loss_fn: LossFn,
    forward: Forward,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    optim: OptimConfig,
    device: torch.device,
    use_amp: bool,
    label: str,
    show: bool,
    timings: dict[str, float],
) -> tuple[float, float]:
    model.train()
    total, count = 0.0, 0
    start = tick = time.perf_counter()
    bar = tqdm(loader, desc=label, disable=not show, leave=False, dynamic_ncols=True)
    for batch in bar:
        loaded = time.perf_counter()
        batch = to_device(batch, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = loss_fn(forward(model, batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(
                model.module if isinstance(model, DistributedDataParallel) else model
            )
        n = _batch_len(batch)
        total += float(loss.detach()) * n
        count += n
        bar.set_postfix(loss=f"{total / count:.4f}")
        now = time.perf_counter()
        timings["data_s"] += loaded - tick
        timings["compute_s"] += now - loaded
        timings["samples"] += n
        tick = now
    return total / max(count, 1), time.perf_counter() - start


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
