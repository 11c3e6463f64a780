"""Atomic, resumable checkpoints.

`last.pt` holds everything needed to resume (weights, optimiser, scheduler, EMA, epoch, history);
`model.pt` holds the final weights and the metadata needed to rebuild the model for inference.
Both are written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from spinegrade.errors import SpinegradeError
from spinegrade.io import write_with


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically `torch.save` a dict."""
    return write_with(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict; a missing or unreadable file is a one-line `SpinegradeError`."""
    path = Path(path)
    if not path.is_file():
        raise SpinegradeError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise SpinegradeError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
