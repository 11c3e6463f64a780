"""The shared training loop: learning, atomic resumable checkpoints, EMA, completed runs, and DDP
with two CPU processes (gloo) that must end with the same weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from spinegrade.config import OptimConfig
from spinegrade.training import distributed
from spinegrade.training.loop import FINAL, LAST, fit


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
