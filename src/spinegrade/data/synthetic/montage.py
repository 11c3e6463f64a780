"""Montages of labelled slices by severity: the visual check that severity shows where labels point.

Works on any RSNA-layout folder with images (synthetic or real): for one series type, rows are the
three severities; each example shows the labelled slice with its points and a zoomed crop around
the featured point (the one whose severity the row shows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.constants import (
    AXIAL_T2,
    CONDITION_LABELS,
    LEVEL_LABELS,
    SAGITTAL_T1,
    SAGITTAL_T2,
    SEVERITIES,
    SEVERITY_LABELS,
)
from spinegrade.errors import DataError
from spinegrade.report.figures import save_png

#: The conditions annotated on each series type (the montage features these).
FEATURED = {
    SAGITTAL_T2: ("spinal_canal_stenosis",),
    SAGITTAL_T1: ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
    AXIAL_T2: ("left_subarticular_stenosis", "right_subarticular_stenosis"),
}
_COLOURS = ("lime", "gold", "red")


def montage(
    data_root: str | Path,
    series_type: str,
    out_png: str | Path,
    examples: int = 3,
    crop_mm: float = 50.0,
    seed: int = 0,
) -> Path:
    """Write a (3 severities) x (`examples` x 2 panels) PNG for `series_type` and return its path.

    Examples are drawn at random (`seed`) among the labelled points of that type and severity;
    markers: green normal/mild, gold moderate, red severe (the featured point is circled).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spinegrade.data.tables import labels_long, load_tables
    from spinegrade.dicom import load_stacks

    if series_type not in FEATURED:
        raise DataError(f"unknown series type {series_type!r}; expected one of {list(FEATURED)}")
    root = Path(data_root)
    tables = load_tables(root)
    if tables.coordinates is None or tables.labels is None:
        raise DataError(f"{root}: no labels or coordinates to draw")
    long = labels_long(tables.labels)[["study_id", "condition", "level", "label"]]
    points = tables.coordinates.merge(long, on=["study_id", "condition", "level"])
    points = points[points["label"] >= 0]
    featured = points[points["condition"].isin(FEATURED[series_type])]
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(3, 2 * examples, figsize=(3.2 * 2 * examples, 3.4 * 3), squeeze=False)
    for k, severity in enumerate(SEVERITIES):
        pool = featured[featured["label"] == k]
        picks = pool.iloc[rng.permutation(len(pool))[:examples]] if len(pool) else pool
        for e in range(examples):
            ax_full, ax_crop = axes[k, 2 * e], axes[k, 2 * e + 1]
            for ax in (ax_full, ax_crop):
                ax.set_axis_off()
            if e >= len(picks):
                continue
            hit = picks.iloc[e]
            volume = _stack_with(root, hit, load_stacks)
            image = volume.pixels[volume.slice_index(int(hit.instance_number))].astype(np.float32)
            same = points[
                (points.series_id == hit.series_id)
                & (points.instance_number == hit.instance_number)
            ]
            lo, hi = np.percentile(image, [1, 99.5])
            for ax in (ax_full, ax_crop):
                ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                ax.scatter(
                    same.x,
                    same.y,
                    s=10,
                    c=[_COLOURS[int(v)] for v in same.label],
                    marker="+",
                    linewidths=0.8,
                )
                ax.scatter(
                    [hit.x],
                    [hit.y],
                    s=140,
                    facecolors="none",
                    edgecolors=_COLOURS[k],
                    linewidths=1.0,
                )
            half_px = crop_mm / 2 / np.array(volume.meta.pixel_spacing)  # (rows, cols)
            ax_crop.set_xlim(hit.x - half_px[1], hit.x + half_px[1])
            ax_crop.set_ylim(hit.y + half_px[0], hit.y - half_px[0])
            ax_full.set_title(f"{hit.study_id} #{hit.instance_number}", fontsize=7)
            ax_crop.set_title(
                f"{CONDITION_LABELS[hit.condition]} {LEVEL_LABELS[hit.level]}", fontsize=7
            )
        axes[k, 0].text(
            -0.05,
            0.5,
            SEVERITY_LABELS[severity],
            transform=axes[k, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=11,
        )
    fig.suptitle(f"{series_type}: labelled points by severity ({root.name})", fontsize=12)
    fig.tight_layout()
    out = save_png(fig, out_png, dpi=80)
    plt.close(fig)
    return out


def _stack_with(root: Path, hit: pd.Series, load_stacks) -> object:  # type: ignore[no-untyped-def]
    """The stack of the labelled series that holds the labelled instance."""
    folder = root / "train_images" / str(int(hit.study_id)) / str(int(hit.series_id))
    for volume in load_stacks(folder):
        if int(hit.instance_number) in volume.instance_numbers:
            return volume
    raise DataError(f"{folder}: instance {hit.instance_number} not found")
