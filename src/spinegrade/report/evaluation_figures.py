"""Evaluation figures from arrays: error distributions, confusion matrices, reliability diagrams.

Generic (no run-folder or stage knowledge): each takes what was computed and a path, and writes a
PNG atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

from spinegrade.constants import SEVERITIES
from spinegrade.report.figures import SEVERITY_COLORS, new_figure, save_png

#: Bins of a reliability diagram (equal width in predicted probability).
RELIABILITY_BINS = 10


def error_distributions(
    errors: dict[str, np.ndarray], path: str | Path, *, unit: str, marks: tuple[float, ...] = ()
) -> Path:
    """Histogram (left) and empirical CDF (right) of each named error array (NaN ignored);
    `marks` are drawn as vertical lines (e.g. the thresholds reported)."""
    fig, axes = new_figure(10, 3.8, 1, 2)
    finite = {k: np.asarray(v, dtype=float)[np.isfinite(v)] for k, v in errors.items()}
    top = max([float(np.percentile(v, 99)) for v in finite.values() if len(v)] + [1.0])
    bins = np.linspace(0.0, top, 40)
    for i, (name, values) in enumerate(finite.items()):
        color = f"C{i}"
        if not len(values):
            continue
        axes[0, 0].hist(np.clip(values, 0, top), bins=bins, alpha=0.5, color=color, label=name)
        ordered = np.sort(values)
        axes[0, 1].plot(
            ordered,
            np.arange(1, len(ordered) + 1) / len(ordered),
            color=color,
            label=f"{name} (median {np.median(values):.1f})",
        )
    for ax in axes[0]:
        for m in marks:
            ax.axvline(m, color="0.6", ls=":", lw=1)
        ax.set_xlabel(f"error ({unit})")
        ax.set_xlim(0, top)
        if ax.lines or ax.patches:
            ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("points")
    axes[0, 1].set_ylabel("share of points within")
    axes[0, 1].set_ylim(0, 1)
    return save_png(fig, path)


def confusion_grid(matrices: dict[str, np.ndarray], path: str | Path) -> Path:
    """One confusion matrix (3 x 3 counts: rows true, columns argmax) per name, side by side."""
    fig, axes = new_figure(4.2 * max(len(matrices), 1), 3.8, 1, max(len(matrices), 1))
    for ax, (name, cm) in zip(axes[0], matrices.items()):
        ConfusionMatrixDisplay(np.asarray(cm), display_labels=list(SEVERITIES)).plot(
            ax=ax, colorbar=False, cmap="Blues"
        )
        ax.set_title(name, fontsize=9)
    return save_png(fig, path)


def reliability_diagram(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    bins: int = RELIABILITY_BINS,
) -> Path:
    """Per severity, the observed frequency against the mean predicted probability in equal-width
    bins, one line per name of `curves` (`labels (n,)` 0/1/2, `probs (n, 3)`); dot size ~ rows."""
    fig, axes = new_figure(4.0 * len(SEVERITIES), 3.9, 1, len(SEVERITIES))
    edges = np.linspace(0.0, 1.0, bins + 1)
    for k, (ax, severity) in enumerate(zip(axes[0], SEVERITIES)):
        ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
        for i, (name, (labels, probs)) in enumerate(curves.items()):
            p = np.asarray(probs, dtype=float)[:, k]
            y = np.asarray(labels) == k
            which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
            count = np.bincount(which, minlength=bins)
            keep = count > 0
            mean_p = np.bincount(which, weights=p, minlength=bins)[keep] / count[keep]
            freq = np.bincount(which, weights=y, minlength=bins)[keep] / count[keep]
            ax.plot(mean_p, freq, color=f"C{i}", marker="", label=name)
            ax.scatter(mean_p, freq, s=8 + 60 * count[keep] / max(count.max(), 1), color=f"C{i}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"predicted P({severity})")
        ax.set_ylabel("observed frequency")
        ax.set_title(severity, color=SEVERITY_COLORS[k])
        ax.legend(fontsize=8, loc="upper left")
    return save_png(fig, path)
