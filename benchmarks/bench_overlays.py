"""Drawing and encoding a full-size study's three overlays, at the PNG zlib level spinegrade writes
(`report.figures.PNG_COMPRESS_LEVEL`) against PIL's default (6, the plain alternative) and level 1.

The panels are MR-like (smooth structure plus mild noise) at full-size shapes: 1 sagittal T2 panel
of
640x640, 2 sagittal T1 panels of 464x368, 5 axial panels of 512x512, each with 5 labelled marks.
Printed: seconds for the three figures (best of `--repeats`, after one warm-up) and bytes written.

    .venv/bin/python benchmarks/bench_overlays.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.ndimage import gaussian_filter

from spinegrade.report.figures import DPI, PNG_COMPRESS_LEVEL
from spinegrade.report.overlays import Mark, Panel, panel_figure


def panels(n: int, shape: tuple[int, int], rng: np.random.Generator) -> list[Panel]:
    """`n` MR-like panels of `shape` with 5 labelled marks each."""

    def image() -> np.ndarray:
        return (
            gaussian_filter(rng.normal(size=shape), 6) * 50 + rng.normal(size=shape) * 0.3
        ).astype(np.float32)

    return [
        Panel(
            image(),
            (0.5, 0.5),
            "title\nsecond line",
            [
                Mark(100 + 40 * i, 100 + 50 * i, f"L{i} 0.10 / 0.20 / 0.70", (0.1, 0.2, 0.7))
                for i in range(5)
            ],
            ("A", "P", "S", "I"),
        )
        for _ in range(n)
    ]


def render(sets: list[list[Panel]], level: int) -> int:
    """Draw and encode every figure at zlib `level`; bytes written."""
    size = 0
    for ps in sets:
        buf = io.BytesIO()
        panel_figure(ps, "overlay").savefig(
            buf, format="png", dpi=DPI, pil_kwargs={"compress_level": level}
        )
        size += len(buf.getvalue())
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sets = [panels(1, (640, 640), rng), panels(2, (464, 368), rng), panels(5, (512, 512), rng)]
    table = Table(
        "zlib level",
        "draw + encode (s)",
        "PNG bytes",
        title="the three overlays of a full-size study",
    )
    for level in sorted({6, PNG_COMPRESS_LEVEL, 1}, reverse=True):
        render(sets, level)
        best, size = float("inf"), 0
        for _ in range(args.repeats):
            start = time.perf_counter()
            size = render(sets, level)
            best = min(best, time.perf_counter() - start)
        name = {
            6: "6 (PIL default, plain)",
            PNG_COMPRESS_LEVEL: f"{PNG_COMPRESS_LEVEL} (spinegrade)",
        }.get(level, str(level))
        table.add_row(name, f"{best:.3f}", f"{size:,}")
    Console().print(table)


if __name__ == "__main__":
    main()
