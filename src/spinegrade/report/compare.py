"""The figure of `spinegrade compare`: grouped bars of several runs' figures, one panel per group
of rows (e.g. the score and its terms; per-condition log loss). A figure a run lacks has no bar and
is marked `-` on the axis."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.report.figures import new_figure, save_png


def comparison_bars(panels: Mapping[str, pd.DataFrame], path: str | Path, title: str) -> Path:
    """One panel per entry of `panels`: rows are figures (x axis), columns are runs (a bar each,
    NaN = the run lacks it, drawn as a `-` at 0); lower is better."""
    runs = list(next(iter(panels.values())).columns)
    width = max(6.0, 0.9 * max(len(p) for p in panels.values()) * max(len(runs), 1) ** 0.5 + 2)
    fig, axes = new_figure(width, 3.6 * len(panels), len(panels), 1)
    bar = 0.8 / max(len(runs), 1)
    for ax, (name, frame) in zip(axes[:, 0], panels.items()):
        x = np.arange(len(frame))
        for j, run in enumerate(runs):
            values = frame[run].to_numpy(dtype=float)
            offset = x - 0.4 + bar * (j + 0.5)
            ax.bar(offset, np.nan_to_num(values), width=bar, color=f"C{j % 10}", label=run)
            for xi, v in zip(offset, values):
                if np.isnan(v):
                    ax.text(xi, 0, "-", ha="center", va="bottom", fontsize=9)
        ax.set_xticks(x, list(frame.index), rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{name} (lower is better)", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)
