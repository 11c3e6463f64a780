"""TensorBoard logs of `fit` (`optim.tensorboard`): read back with tensorboard's EventAccumulator,
the step and epoch scalars are there and equal the history; off by default; a resumed run does not
log the interrupted epoch twice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spinegrade.training.logs import TB_DIR
from spinegrade.training.loop import fit

from .test_loop import OPT, LinearToy, make_model, mse, mse_with_parts

LOGGED = dataclasses.replace(OPT, tensorboard=True)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}


def test_fit_writes_step_and_epoch_scalars(tmp_path: Path) -> None:
    result = fit(
        make_model(),
        LinearToy(),
        LinearToy(16),
        mse,
        LOGGED,
        tmp_path,
        device=torch.device("cpu"),
        progress=False,
    )
    scalars = _scalars(tmp_path / TB_DIR)
    steps = len(LinearToy()) // OPT.batch_size * OPT.epochs
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, steps + 1))
    assert len(scalars["train/lr"]) == steps
    for key in ("train_loss", "val_loss", "lr", "seconds"):
        logged = [v for _, v in scalars[f"epoch/{key}"]]
        assert logged == pytest.approx([h[key] for h in result.history], rel=1e-6), key
    assert [s for s, _ in scalars["epoch/train_loss"]] == [8 * e for e in range(1, 7)]


def test_tensorboard_is_off_by_default(tmp_path: Path) -> None:
    fit(
        make_model(),
        LinearToy(),
        None,
        mse,
        OPT,
        tmp_path,
        device=torch.device("cpu"),
        progress=False,
    )
    assert not (tmp_path / TB_DIR).exists()


def test_a_resumed_run_logs_each_step_once(tmp_path: Path) -> None:
    calls = {"n": 0}

    def crash_in_epoch_three(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 2 * 8 + 3:
            raise KeyboardInterrupt
        return mse(output, batch)

    with pytest.raises(KeyboardInterrupt):
        fit(
            make_model(),
            LinearToy(),
            None,
            crash_in_epoch_three,
            LOGGED,
            tmp_path,
            device=torch.device("cpu"),
            progress=False,
        )
    fit(
        make_model(),
        LinearToy(),
        None,
        mse,
        LOGGED,
        tmp_path,
        device=torch.device("cpu"),
        progress=False,
    )
    steps = [s for s, _ in _scalars(tmp_path / TB_DIR)["train/loss"]]
    assert steps == list(range(1, 8 * OPT.epochs + 1))  # steps 17-19 of the crash were purged


def test_the_named_parts_of_a_loss_are_logged_per_step_and_per_epoch(tmp_path: Path) -> None:
    result = fit(
        make_model(),
        LinearToy(),
        None,
        mse_with_parts,
        dataclasses.replace(LOGGED, epochs=2),
        tmp_path,
        device=torch.device("cpu"),
        progress=False,
    )
    scalars = _scalars(tmp_path / TB_DIR)
    steps = len(LinearToy()) // OPT.batch_size * 2
    for name in ("fit", "size"):
        assert [s for s, _ in scalars[f"train/{name}"]] == list(range(1, steps + 1))
        logged = [v for _, v in scalars[f"epoch/train_{name}"]]
        assert logged == pytest.approx([h[f"train_{name}"] for h in result.history], rel=1e-6)
