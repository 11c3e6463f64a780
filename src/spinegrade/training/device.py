"""Choosing the torch device from the config's `device` string."""

from __future__ import annotations

import torch

from spinegrade.errors import ConfigError
from spinegrade.training.distributed import current


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> this process's CUDA device when available (its local rank under torchrun), else
    CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", current().local_rank)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device {name!r} is not a torch device (auto, cpu, cuda, cuda:N)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


def describe(device: torch.device, threads: int | None = None) -> str:
    """Human-readable name for benchmark titles: the GPU's model, or CPU with its thread count."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"CPU ({threads or torch.get_num_threads()} threads)"
