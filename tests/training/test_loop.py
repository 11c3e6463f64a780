"""The shared training loop: learning, atomic resumable checkpoints, EMA, completed runs, DDP
with two CPU processes (gloo) that must end with the same weights, early stopping on an inner
split, and weighted draws."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from spinegrade.config import OptimConfig
from spinegrade.errors import ConfigError
from spinegrade.training import distributed
from spinegrade.training.loop import FINAL, LAST, default_forward, evaluate_loss, fit
from spinegrade.training.selection import SELECTION_JSON, Selection


class LinearToy(Dataset):
    """y = x @ w_true + 0.2, 64 samples of 4 features."""

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([0.5, -1.0, 0.25, 1.0]) + 0.2

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.x[i], "target": self.y[i]}


def mse(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(output.squeeze(-1), batch["target"])


def make_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Linear(4, 1)


OPT = OptimConfig(epochs=6, batch_size=8, lr=0.1, weight_decay=0.0, warmup_epochs=0.0, amp=False)


def test_fit_learns_and_writes_final_checkpoint(tmp_path: Path) -> None:
    model = make_model()
    result = fit(model, LinearToy(), LinearToy(16), mse, OPT, tmp_path, device=torch.device("cpu"))
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == OPT.epochs
    assert losses[-1] < 0.1 * losses[0]
    assert result.history[-1]["val_loss"] < 0.1 * losses[0]
    assert (tmp_path / FINAL).is_file() and not (tmp_path / LAST).exists()
    assert (tmp_path / "history.json").is_file()
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    reference = make_model()
    fit(reference, LinearToy(), None, mse, OPT, tmp_path / "ref", device=torch.device("cpu"))

    calls = {"n": 0}
    steps_per_epoch = len(LinearToy()) // OPT.batch_size

    def crash_in_epoch_three(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 2 * steps_per_epoch:
            raise KeyboardInterrupt
        return mse(output, batch)

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(
            make_model(),
            LinearToy(),
            None,
            crash_in_epoch_three,
            OPT,
            run,
            device=torch.device("cpu"),
        )
    assert (run / LAST).is_file() and not (run / FINAL).exists()

    resumed = make_model()
    result = fit(resumed, LinearToy(), None, mse, OPT, run, device=torch.device("cpu"))
    assert result.resumed_from_epoch == 2
    assert len(result.history) == OPT.epochs
    for a, b in zip(resumed.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)


def test_completed_run_only_loads_weights(tmp_path: Path) -> None:
    trained = make_model()
    fit(trained, LinearToy(), None, mse, OPT, tmp_path, device=torch.device("cpu"))

    def must_not_train(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise AssertionError("a completed run was trained again")

    fresh = make_model()
    result = fit(
        fresh, LinearToy(), None, must_not_train, OPT, tmp_path, device=torch.device("cpu")
    )
    assert result.resumed_from_epoch == OPT.epochs
    torch.testing.assert_close(fresh.weight, trained.weight)


def test_ema_weights_are_saved_as_final(tmp_path: Path) -> None:
    opt = OptimConfig(**{**OPT.__dict__, "ema_decay": 0.9})
    model = make_model()
    fit(model, LinearToy(), None, mse, opt, tmp_path, device=torch.device("cpu"))
    saved = torch.load(tmp_path / FINAL, weights_only=False)["model"]
    torch.testing.assert_close(saved["weight"], model.weight.detach())
    plain = make_model()
    fit(plain, LinearToy(), None, mse, OPT, tmp_path / "plain", device=torch.device("cpu"))
    assert not torch.allclose(plain.weight, model.weight)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    info = distributed.init_distributed("gloo")
    assert info.world_size == world and info.rank == rank
    model = make_model()
    result = fit(
        model, LinearToy(), LinearToy(16), mse, OPT, Path(out) / "run", device=torch.device("cpu")
    )
    torch.save(
        {"weight": model.weight.detach(), "history": result.history}, Path(out) / f"rank{rank}.pt"
    )
    distributed.shutdown()


def test_two_process_ddp_agrees_and_finishes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    torch.testing.assert_close(r0["weight"], r1["weight"])
    assert len(r0["history"]) == OPT.epochs
    assert r0["history"][-1]["train_loss"] < 0.2 * r0["history"][0]["train_loss"]
    saved = torch.load(tmp_path / "run" / FINAL, weights_only=False)
    torch.testing.assert_close(saved["model"]["weight"], r0["weight"])


def test_single_process_is_not_distributed() -> None:
    info = distributed.current()
    assert not info.enabled and info.is_main and info.world_size == 1


def test_progress_false_draws_no_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit(
        make_model(),
        LinearToy(),
        None,
        mse,
        OPT,
        tmp_path / "quiet",
        device=torch.device("cpu"),
        progress=False,
    )
    assert capsys.readouterr().err == ""
    fit(make_model(), LinearToy(), None, mse, OPT, tmp_path / "shown", device=torch.device("cpu"))
    assert "train 1/" in capsys.readouterr().err


# --- early stopping on an inner split -------------------------------------------------------------


class HalfToy(LinearToy):
    """The toy's inputs with half its targets: as the model learns the toy, the loss on this set
    first falls, then rises again, so the best epoch lies inside the run."""

    def __init__(self, n: int = 16) -> None:
        super().__init__(n)
        self.y = 0.5 * self.y


SELECT = dataclasses.replace(OPT, lr=0.03, early_stopping=True)


def _loss_on(model: nn.Module, data: Dataset) -> float:
    return evaluate_loss(model, data, mse, default_forward, torch.device("cpu"), 8)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_early_stopping_keeps_the_best_inner_epoch(tmp_path: Path, ema_decay: float) -> None:
    opt = dataclasses.replace(SELECT, ema_decay=ema_decay)
    model, inner = make_model(), HalfToy()
    result = fit(
        model,
        LinearToy(),
        None,
        mse,
        opt,
        tmp_path,
        device=torch.device("cpu"),
        select=Selection(inner, [11, 12]),
        progress=False,
    )
    losses = [h["select_loss"] for h in result.history]
    best = 1 + losses.index(min(losses))
    assert len(losses) == opt.epochs and 1 < best < opt.epochs, losses  # a real choice was made
    assert result.selected_epoch == best
    # the weights kept are those that scored the best inner loss (the EMA ones with an EMA)
    assert _loss_on(model, inner) == pytest.approx(min(losses), rel=1e-6)
    saved = torch.load(tmp_path / FINAL, weights_only=True)
    torch.testing.assert_close(saved["model"]["weight"], model.weight.detach())
    record = json.loads((tmp_path / SELECTION_JSON).read_text())
    assert record == saved["selection"]
    assert (record["epoch"], record["inner_studies"], record["stopped_early"]) == (
        best,
        [11, 12],
        False,
    )


def test_patience_stops_after_epochs_without_a_better_inner_loss(tmp_path: Path) -> None:
    opt = dataclasses.replace(SELECT, patience=2)
    result = fit(
        make_model(),
        LinearToy(),
        None,
        mse,
        opt,
        tmp_path,
        device=torch.device("cpu"),
        select=Selection(HalfToy(), [1]),
        progress=False,
    )
    losses = [h["select_loss"] for h in result.history]
    assert result.selected_epoch == 1 + losses.index(min(losses))
    assert len(losses) == result.selected_epoch + 2 < opt.epochs
    assert json.loads((tmp_path / SELECTION_JSON).read_text())["stopped_early"] is True


def test_an_interrupted_early_stopping_run_resumes_to_the_same_choice(tmp_path: Path) -> None:
    reference = make_model()
    ref = fit(
        reference,
        LinearToy(),
        None,
        mse,
        SELECT,
        tmp_path / "ref",
        device=torch.device("cpu"),
        select=Selection(HalfToy(), [1]),
        progress=False,
    )
    assert ref.selected_epoch is not None and ref.selected_epoch < 4  # the crash comes after it
    steps, calls = len(LinearToy()) // OPT.batch_size, {"n": 0}

    def crash_in_epoch_five(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls["n"] += torch.is_grad_enabled()  # training steps only
        if calls["n"] > 4 * steps:
            raise KeyboardInterrupt
        return mse(output, batch)

    with pytest.raises(KeyboardInterrupt):
        fit(
            make_model(),
            LinearToy(),
            None,
            crash_in_epoch_five,
            SELECT,
            tmp_path / "run",
            device=torch.device("cpu"),
            select=Selection(HalfToy(), [1]),
            progress=False,
        )
    resumed = make_model()
    result = fit(
        resumed,
        LinearToy(),
        None,
        mse,
        SELECT,
        tmp_path / "run",
        device=torch.device("cpu"),
        select=Selection(HalfToy(), [1]),
        progress=False,
    )
    assert result.resumed_from_epoch == 4 and result.selected_epoch == ref.selected_epoch
    torch.testing.assert_close(resumed.weight, reference.weight)


def test_early_stopping_without_an_inner_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no inner split"):
        fit(
            make_model(),
            LinearToy(),
            LinearToy(16),
            mse,
            SELECT,
            tmp_path,
            device=torch.device("cpu"),
        )


# --- weighted draws -------------------------------------------------------------------------------


class Indexed(LinearToy):
    """The toy with each sample's index in its batch, to count what an epoch drew."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**super().__getitem__(i), "index": torch.tensor(i)}


def test_sample_weights_set_how_often_fit_draws_each_sample(tmp_path: Path) -> None:
    drawn: list[int] = []

    def counting(output: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        drawn.extend(batch["index"].tolist())
        return mse(output, batch)

    data = Indexed()
    weights = [4.0 if i < 16 else 1.0 for i in range(len(data))]  # 16 samples drawn 4x as often
    opt = dataclasses.replace(OPT, epochs=40)
    fit(
        make_model(),
        data,
        None,
        counting,
        opt,
        tmp_path,
        device=torch.device("cpu"),
        progress=False,
        sample_weights=weights,
    )
    assert len(drawn) == opt.epochs * len(data)  # an epoch is as long as without weights
    counts = np.bincount(drawn, minlength=len(data))
    heavy, light = counts[:16].mean(), counts[16:].mean()
    # expected 4 * 40 * 64 / 112 = 91.4 and 22.9 draws per sample (binomial sd 8.8 and 4.7)
    assert heavy / light == pytest.approx(4.0, rel=0.1)
    with pytest.raises(ValueError, match="3 sample weights for 64 samples"):
        fit(
            make_model(),
            data,
            None,
            mse,
            OPT,
            tmp_path / "bad",
            device=torch.device("cpu"),
            sample_weights=[1.0, 2.0, 3.0],
        )


def mse_with_parts(
    output: torch.Tensor, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """mse plus 0.1 x the squared mean output, returning both terms as named parts."""
    fit_term, size = mse(output, batch), output.mean() ** 2
    return fit_term + 0.1 * size, {"fit": fit_term, "size": size}


def test_a_loss_with_named_parts_logs_their_epoch_means_and_evaluates_on_the_loss(
    tmp_path: Path,
) -> None:
    opt = dataclasses.replace(OPT, epochs=2)
    result = fit(
        make_model(),
        LinearToy(),
        LinearToy(16),
        mse_with_parts,
        opt,
        tmp_path,
        device=torch.device("cpu"),
        progress=False,
    )
    for record in result.history:
        assert set(record) >= {"train_loss", "train_fit", "train_size", "val_loss"}
        # the parts are batch-weighted means like the loss, so they add up the same way
        assert record["train_loss"] == pytest.approx(
            record["train_fit"] + 0.1 * record["train_size"], rel=1e-6
        )
    assert result.history[1]["train_fit"] < result.history[0]["train_fit"]
    # evaluation (the val loss) takes the loss alone, not its parts
    model, cpu = make_model(), torch.device("cpu")
    alone = lambda o, b: mse_with_parts(o, b)[0]  # noqa: E731
    plain = evaluate_loss(model, LinearToy(16), alone, default_forward, cpu, 8)
    assert evaluate_loss(model, LinearToy(16), mse_with_parts, default_forward, cpu, 8) == plain
