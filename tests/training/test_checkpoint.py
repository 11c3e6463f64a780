"""Checkpoints are data: written atomically with plain values only, loaded with weights_only, and a
file that carries a pickled object is refused with one line before anything in it runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from spinegrade.errors import SpinegradeError
from spinegrade.training.checkpoint import load_checkpoint, save_checkpoint


class _CreatesAFile:
    """Unpickling this calls `open(path, "w")`: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


def write_hostile_checkpoint(path: Path, victim: Path) -> None:
    """A checkpoint that looks like spinegrade's but whose `meta` would create `victim`."""
    payload = {"model": {"w": torch.zeros(2)}, "history": [], "meta": _CreatesAFile(victim)}
    torch.save(payload, path)


def test_round_trip_keeps_tensors_and_plain_metadata(tmp_path: Path) -> None:
    payload = {
        "model": {"w": torch.arange(3.0)},
        "meta": {"spec": {"dim": 8, "name": "x"}, "n": None},
        "history": [{"epoch": 1, "train_loss": 0.5}],
        "shape": torch.Size([2, 3]),
    }
    save_checkpoint(tmp_path / "m.pt", payload)
    back = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(back["model"]["w"], payload["model"]["w"])
    assert back["meta"] == payload["meta"] and back["history"] == payload["history"]


def test_saving_refuses_what_could_not_be_loaded_safely(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"checkpoint\['history'\]\[0\]\['loss'\]: float64"):
        save_checkpoint(tmp_path / "m.pt", {"history": [{"loss": np.float64(0.5)}]})
    assert not (tmp_path / "m.pt").exists()


def test_a_pickled_object_is_refused_and_never_runs(tmp_path: Path) -> None:
    victim = tmp_path / "created-by-the-checkpoint"
    write_hostile_checkpoint(tmp_path / "model.pt", victim)
    with pytest.raises(SpinegradeError) as err:
        load_checkpoint(tmp_path / "model.pt")
    message = str(err.value)
    assert "model.pt: refused" in message and "nothing in it was run" in message
    assert "open" in message  # names what it would have called
    assert "\n" not in message
    assert not victim.exists()


def test_a_missing_or_broken_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpinegradeError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "broken.pt").write_bytes(os.urandom(64))
    with pytest.raises(SpinegradeError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "broken.pt")
