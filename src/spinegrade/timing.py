"""Per-stage wall and CPU time, summed over studies (CPU time stays meaningful on a busy
machine)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Seconds per stage: `wall` (elapsed) and `cpu` (this process's CPU time, all its threads)."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Add the block's wall and CPU time to `stage`."""
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - w
            self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - c

    def add(self, other: Timing) -> None:
        """Sum `other` into this timing."""
        for mine, theirs in ((self.wall, other.wall), (self.cpu, other.cpu)):
            for stage, s in theirs.items():
                mine[stage] = mine.get(stage, 0.0) + s
