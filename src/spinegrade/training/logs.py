"""Experiment logs: the scalars of one `fit` as TensorBoard event files (`optim.tensorboard`).

Every scalar is logged against the optimiser step: `train/loss` and `train/lr` at each step (and
`train/<name>` for each named part of a loss that has parts, e.g. the grader's `task` and
`consistency` with `grade.consistency_weight` > 0), and at the end of each epoch `epoch/<key>` for
every number of its history record (`train_loss`, `train_<name>` of each part, `val_loss`,
`select_loss`, `lr`, `seconds`, `epoch`). A resumed run purges the events that the
interrupted one wrote after its last checkpoint. `tensorboard --logdir RUN_DIR` shows every
network of every fold (`fold_<k>/<stage>/tb/`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spinegrade.errors import ConfigError

#: The event files' folder inside a stage's output folder.
TB_DIR = "tb"


class ScalarLog:
    """A `torch.utils.tensorboard.SummaryWriter` on `log_dir`, or nothing when `log_dir` is None."""

    def __init__(self, log_dir: str | Path | None, purge_step: int | None = None) -> None:
        """Events at `purge_step` and later that an interrupted run left in `log_dir` are hidden
        (TensorBoard's purge), as this run logs them again."""
        self.writer: Any = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "optim.tensorboard is on but the tensorboard package is missing "
                "(pip install tensorboard)"
            ) from None
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def add(self, values: Mapping[str, Any], step: int, prefix: str) -> None:
        """`prefix/key` for every number in `values`, at optimiser step `step`."""
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
