"""Atomic, resumable checkpoints that hold data only.

`last.pt` holds everything needed to resume (weights, optimiser, scheduler, EMA, epoch, history);
`model.pt` holds the final weights and the metadata needed to rebuild the model for inference.
Both are written to a temporary name and renamed, so a crash never leaves a half-written file.

A checkpoint is tensors and plain metadata (dicts, lists, strings, numbers, booleans, None), and
every load uses `torch.load(..., weights_only=True)`: a file that carries any other pickled object
(which could run code when unpickled) is refused with one line naming it, and nothing in it runs.
`save_checkpoint` refuses to write such objects in the first place.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from spinegrade.errors import SpinegradeError
from spinegrade.io import write_with


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically `torch.save` a dict of tensors and plain values (TypeError for anything else)."""
    _check_plain(payload, "checkpoint")
    return write_with(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict; a missing or unreadable file is a one-line `SpinegradeError`."""
    path = Path(path)
    if not path.is_file():
        raise SpinegradeError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise SpinegradeError(
                f"{path}: refused: the checkpoint holds a pickled object "
                f"({found.group(1)}), not only tensors and plain data; nothing in "
                f"it was run"
            ) from None
        raise SpinegradeError(f"{path}: not a readable checkpoint (not a torch file)") from None
    except Exception as exc:  # noqa: BLE001 - any other failure means an unusable file
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise SpinegradeError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {reason})"
        ) from None


#: Exact types allowed as values (numpy scalars are refused: they would not load with weights_only).
_PRIMITIVES = (str, int, float, bool, type(None))
_TORCH = (torch.Tensor, torch.dtype, torch.device)


def _check_plain(value: Any, where: str) -> None:
    """TypeError naming the first value that `weights_only=True` loading would refuse."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, where)
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif type(value) not in _PRIMITIVES and not isinstance(value, _TORCH):
        raise TypeError(
            f"{where}: {type(value).__name__} is not plain data; store it as plain values"
        )
