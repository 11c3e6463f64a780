"""Generic matplotlib helpers: figures without pyplot state, heatmaps, share bars, atomic PNG save.

Figures are built with `matplotlib.figure.Figure` directly (no global pyplot state, no GUI backend),
so they are safe in worker processes and tests, and are freed as soon as they go out of scope.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spinegrade.io import write_with

#: Colours of the three severities (normal_mild, moderate, severe), colour-blind friendly.
SEVERITY_COLORS: tuple[str, ...] = ("#4c9f70", "#f2b134", "#d1495b")
DPI = 100
#: zlib level of written PNGs. `benchmarks/bench_overlays.py` (the three overlays of a full-size
#: study, 8 MR-like panels, drawn and encoded; sixth session, CPU s): level 6 (PIL's default) 0.68 s
#: and 1.29 MB, level 3 0.47 s and 1.31 MB, level 1 0.40 s and 1.39 MB.
PNG_COMPRESS_LEVEL = 1


def new_figure(
    width: float, height: float, nrows: int = 1, ncols: int = 1, **kw
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure of `width` x `height` inches and its axes as a 2D array."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def png_bytes(fig: Figure, *, dpi: int = DPI) -> bytes:
    """The figure rendered as PNG bytes."""
    buf = io.BytesIO()
    _savefig(fig, buf, dpi)
    return buf.getvalue()


def save_png(fig: Figure, path: str | os.PathLike[str], *, dpi: int = DPI) -> Path:
    """Atomically write the figure as PNG to `path`; returns the path."""
    return write_with(path, lambda tmp: _savefig(fig, tmp, dpi))


def _savefig(fig: Figure, target: Any, dpi: int) -> None:
    fig.savefig(target, format="png", dpi=dpi, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})


def heatmap(
    ax: Axes,
    matrix: pd.DataFrame,
    *,
    vmin: float = -1.0,
    vmax: float = 1.0,
    cmap: str = "RdBu_r",
    annotate: bool = False,
    fmt: str = "{:.2f}",
    colorbar: bool = True,
):
    """Draw `matrix` (rows x cols, labelled by its index/columns) as an image; NaN cells blank."""
    values = matrix.to_numpy(dtype=float)
    im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest", aspect="auto")
    ax.set_xticks(range(values.shape[1]), [str(c) for c in matrix.columns], rotation=90, fontsize=7)
    ax.set_yticks(range(values.shape[0]), [str(i) for i in matrix.index], fontsize=7)
    if annotate:
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                dark = abs(v - (vmin + vmax) / 2) > 0.35 * (vmax - vmin)
                ax.text(
                    c,
                    r,
                    fmt.format(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8)
    return im


def share_bars(
    ax: Axes,
    counts: pd.DataFrame,
    *,
    colors: Sequence[str] = SEVERITY_COLORS,
    horizontal: bool = True,
    label_min: float = 0.06,
) -> None:
    """Stacked 100% bars, one per row of `counts` (categories x classes), shares written inside."""
    shares = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    pos = np.arange(len(shares))
    left = np.zeros(len(shares))
    for k, col in enumerate(shares.columns):
        w = shares[col].to_numpy()
        if horizontal:
            ax.barh(pos, w, left=left, color=colors[k % len(colors)], label=str(col), height=0.8)
        else:
            ax.bar(pos, w, bottom=left, color=colors[k % len(colors)], label=str(col), width=0.8)
        for i, (start, width) in enumerate(zip(left, w)):
            if width >= label_min:
                xy = (start + width / 2, i) if horizontal else (i, start + width / 2)
                ax.text(*xy, f"{width:.0%}", ha="center", va="center", fontsize=7)
        left += w
    names = [str(i) for i in shares.index]
    if horizontal:
        ax.set_yticks(pos, names, fontsize=8)
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
    else:
        ax.set_xticks(pos, names, fontsize=8, rotation=45, ha="right")
        ax.set_ylim(0, 1)
