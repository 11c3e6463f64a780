"""The LR range test: exponential rates, a stop at divergence, and a suggestion that trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from spinegrade.training.loop import fit
from spinegrade.training.lr_find import lr_sweep

from .test_loop import OPT, LinearToy, make_model, mse

CPU = torch.device("cpu")


def test_sweep_rates_grow_exponentially_and_stop_when_the_loss_diverges() -> None:
    curve = lr_sweep(
        make_model(),
        LinearToy(),
        mse,
        OPT,
        device=CPU,
        start=1e-5,
        end=1e3,
        steps=100,
        progress=False,
    )
    ratios = np.diff(np.log(curve.lrs))
    assert curve.lrs[0] == pytest.approx(1e-5) and np.allclose(ratios, np.log(1e8) / 99)
    assert len(curve.lrs) < 100 and "passed 4x its lowest" in curve.stopped
    assert max(curve.losses) > 4 * min(curve.losses)
    assert len(curve.smoothed) == len(curve.losses) == len(curve.lrs)


def test_the_suggested_rate_trains_and_one_far_below_it_does_not(tmp_path: Path) -> None:
    curve = lr_sweep(
        make_model(),
        LinearToy(),
        mse,
        OPT,
        device=CPU,
        start=1e-5,
        end=1.0,
        steps=100,
        progress=False,
    )
    low = int(np.argmin(curve.smoothed))
    assert curve.rule == "steepest descent" and curve.lrs[0] < curve.suggestion <= curve.lrs[low]
    assert curve.minimum_over_10 == pytest.approx(curve.lrs[low] / 10)

    def final_loss(lr: float, name: str) -> float:
        opt = dataclasses.replace(OPT, lr=lr, epochs=4)
        hist = fit(
            make_model(), LinearToy(), None, mse, opt, tmp_path / name, device=CPU, progress=False
        ).history
        return hist[-1]["train_loss"] / hist[0]["train_loss"]

    assert final_loss(curve.suggestion, "suggested") < 0.5
    assert final_loss(curve.suggestion / 1000, "too_low") > 0.9  # far below it nothing happens


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="0 < start < end"):
        lr_sweep(make_model(), LinearToy(), mse, OPT, device=CPU, start=1.0, end=1e-3)
