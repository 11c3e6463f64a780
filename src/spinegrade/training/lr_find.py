"""A learning-rate range test: train for a few steps while the learning rate grows exponentially,
and read a good learning rate off the loss curve (L. Smith, 2015; fastai's `lr_find`).

The sweep uses the stage's own optimiser step (`loop.train_step`: AdamW, gradient clipping, AMP
on CUDA) on a throwaway model, and stops once a running average of the loss (an exponential
moving average, `beta`) passes `diverge` times its lowest value, or the loss is not finite.

The curve is then smoothed without lag (a Gaussian over `steps / 25` steps, centred: a running
average would trail the learning rate by many steps), and the suggested value is the learning rate
of its steepest descent (the most negative slope against log10 of the learning rate) between the
first steps (skipped: the filter's edge) and its minimum. When that span is too short, the
suggestion falls back to the minimum's learning rate / 10. Both are reported.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from spinegrade.config import OptimConfig
from spinegrade.training.loop import (
    Batch,
    Forward,
    LossFn,
    StepConfig,
    default_forward,
    to_device,
    train_step,
)

#: Width of the smoothing Gaussian, as a share of the sweep's steps (sigma 4 steps of 100).
SMOOTH_SHARE = 1 / 25


@dataclass
class LRCurve:
    """One sweep: learning rate, raw and smoothed loss per step, and the two suggestions."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]  #: the losses smoothed without lag (see the module's docstring)
    stopped: str  #: why the sweep ended
    steepest: float | None  #: learning rate of the steepest descent of the smoothed loss
    minimum_over_10: float  #: learning rate of the smoothed loss's minimum, divided by 10

    @property
    def suggestion(self) -> float:
        """The steepest descent's rate, else the minimum's rate / 10."""
        return self.steepest if self.steepest is not None else self.minimum_over_10

    @property
    def rule(self) -> str:
        """Which of the two gave :attr:`suggestion`."""
        return "steepest descent" if self.steepest is not None else "minimum / 10"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "suggestion": self.suggestion, "rule": self.rule}


def lr_sweep(
    model: nn.Module,
    dataset: Dataset,
    loss_fn: LossFn,
    optim: OptimConfig,
    *,
    device: torch.device,
    start: float = 1e-6,
    end: float = 1.0,
    steps: int = 100,
    forward: Forward = default_forward,
    collate_fn: Callable[[list[Any]], Batch] | None = None,
    num_workers: int = 0,
    seed: int = 0,
    beta: float = 0.9,
    diverge: float = 4.0,
    progress: bool = True,
) -> LRCurve:
    """Train `model` (changed in place: give it a fresh one) for up to `steps` batches of
    `optim.batch_size` samples of `dataset` at learning rates from `start` to `end`, growing
    exponentially, cycling over the data as often as needed."""
    if not 0 < start < end or steps < 2:
        raise ValueError(f"an LR sweep needs 0 < start < end and 2+ steps, got {start}, {end}")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=start, weight_decay=optim.weight_decay)
    step = StepConfig(
        loss_fn, forward, optim.grad_clip, device, optim.amp and device.type == "cuda"
    )
    batches = _cycle(dataset, optim.batch_size, collate_fn, num_workers, seed)
    lrs: list[float] = []
    losses: list[float] = []
    averages: list[float] = []
    average, stopped = 0.0, f"reached {end:g} after {steps} steps"
    for i in tqdm(range(steps), desc="LR sweep", disable=not progress, leave=False):
        lr = start * (end / start) ** (i / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, _ = train_step(model, to_device(next(batches), device), optimizer, step)
        if not math.isfinite(loss):
            stopped = f"the loss was not finite at lr {lr:.3g}"
            break
        average = beta * average + (1 - beta) * loss
        lrs.append(lr)
        losses.append(loss)
        averages.append(average / (1 - beta ** (i + 1)))  # bias-corrected
        if averages[-1] > diverge * min(averages):
            stopped = f"the running loss passed {diverge:g}x its lowest at lr {lr:.3g}"
            break
    if not lrs:
        raise ValueError(f"the LR sweep could not take a step: {stopped}")
    sigma = max(steps * SMOOTH_SHARE, 1.0)
    smoothed = gaussian_filter1d(np.asarray(losses), sigma, mode="nearest")
    steepest, low = _suggestions(np.asarray(lrs), smoothed, skip=int(2 * sigma))
    return LRCurve(lrs, losses, smoothed.tolist(), stopped, steepest, low)


def _suggestions(lrs: np.ndarray, smoothed: np.ndarray, skip: int) -> tuple[float | None, float]:
    """(steepest descent's rate or None, the minimum's rate / 10) of a smoothed curve `(n,)`,
    searching the descent from step `skip` to the minimum."""
    low = int(np.argmin(smoothed))
    start = min(skip, low)
    x, y = np.log10(lrs[start : low + 1]), smoothed[start : low + 1]
    steepest = None
    if len(x) >= 3:
        slope = np.gradient(y, x)
        if slope.min() < 0:
            steepest = float(lrs[start + int(np.argmin(slope))])
    return steepest, float(lrs[low]) / 10


def _cycle(
    dataset: Dataset,
    batch_size: int,
    collate_fn: Callable[[list[Any]], Batch] | None,
    num_workers: int,
    seed: int,
) -> Iterator[Batch]:
    """Shuffled batches without end (a new order each pass)."""
    for epoch in itertools.count():
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed + epoch),
            collate_fn=collate_fn,
            num_workers=num_workers,
            drop_last=len(dataset) > batch_size,  # type: ignore[arg-type]
        )
        yield from loader
