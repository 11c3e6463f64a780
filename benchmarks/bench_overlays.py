"""Drawing and encoding a full-size study's three overlays: how spinegrade draws them against the
plain way, and the PNG zlib level spinegrade writes (`report.figures.PNG_COMPRESS_LEVEL`) against
PIL's default (6) and level 1.

Drawing: spinegrade area-averages each slice down to the pixels its panel fills
(`report.overlays.display_image`) and lays out the severity legend once per process
(`report.overlays.legend_pixels`); the plain way hands matplotlib the full-resolution slice and lays
the legend out for every figure (the same functions with those two steps undone, in the same run).

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
from unittest import mock

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.ndimage import gaussian_filter

from spinegrade.report import overlays
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


def render(sets: list[list[Panel]], level: int, plain: bool = False) -> int:
    """Draw and encode every figure at zlib `level` (`plain`: full-resolution slices, the legend
    laid out per figure); bytes written."""
    if plain:
        with (
            mock.patch.object(overlays, "display_image", lambda image, *_: image),
            mock.patch.object(overlays, "legend_pixels", overlays.legend_pixels.__wrapped__),
        ):
            return render(sets, level)
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
        "drawing",
        "zlib level",
        "draw + encode (s)",
        "CPU (s)",
        "PNG bytes",
        title="the three overlays of a full-size study (best of the repeats)",
    )
    levels = {6: "6 (PIL default)", PNG_COMPRESS_LEVEL: f"{PNG_COMPRESS_LEVEL} (spinegrade)"}
    levels[1] = "1"
    cases = [(True, PNG_COMPRESS_LEVEL)] + [(False, lv) for lv in sorted(levels, reverse=True)]
    for plain, level in cases:
        render(sets, level, plain)
        best, cpu, size = float("inf"), float("inf"), 0
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            size = render(sets, level, plain)
            best = min(best, time.perf_counter() - start)
            cpu = min(cpu, time.process_time() - start_cpu)
        drawing = "plain (full resolution)" if plain else "spinegrade (display size)"
        table.add_row(drawing, levels[level], f"{best:.3f}", f"{cpu:.3f}", f"{size:,}")
    Console().print(table)


if __name__ == "__main__":
    main()
