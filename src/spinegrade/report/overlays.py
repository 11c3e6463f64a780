"""Overlays: the slices a prediction looked at, with the located points coloured by severity.

Three pictures per study (see :func:`study_panels`):

- ``sagittal_t2``: the Sagittal T2/STIR slice holding most canal points, the 5 levels' canal points
  labelled with their probabilities (normal_mild / moderate / severe);
- ``sagittal_t1``: the left and the right foraminal slices of the Sagittal T1 series;
- ``axial_t2``: per level, the axial slice it was assigned to, with the left and right
  subarticular points.

A point's colour is the most likely severity (`report.figures.SEVERITY_COLORS`); a hollow marker
is a point that lies on another slice of the stack than the one shown. Images are drawn in
millimetres (non-square pixels keep their true shape) with the patient directions (LPS letters
R/L, A/P, S/I) from the stack's geometry on the image edges.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patheffects import withStroke
from PIL import Image

from spinegrade.constants import (
    LEVEL_LABELS,
    LEVELS,
    SAGITTAL_T1,
    SAGITTAL_T2,
    SEVERITIES,
    SEVERITY_LABELS,
)
from spinegrade.dicom import Study, Volume
from spinegrade.report.figures import DPI, SEVERITY_COLORS, save_png

OVERLAYS = ("sagittal_t2", "sagittal_t1", "axial_t2")
OVERLAY_TITLES = {
    "sagittal_t2": "Spinal canal (Sagittal T2/STIR)",
    "sagittal_t1": "Neural foramina (Sagittal T1)",
    "axial_t2": "Subarticular recesses (Axial T2)",
}
_SPINAL = "spinal_canal_stenosis"
_FORAMINA = {"left": "left_neural_foraminal_narrowing", "right": "right_neural_foraminal_narrowing"}
_SUBARTICULAR = {"left": "left_subarticular_stenosis", "right": "right_subarticular_stenosis"}
_AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # (-, +) of LPS x, y, z
LABEL_GAP_PT = 11.0  #: minimum vertical distance between two point labels (points)
BLANK_COLOR = "#9e9e9e"  #: a point whose grade is blank (not scored)
PROBABILITIES_LEGEND = "most likely severity · numbers: P(normal/mild) / P(moderate) / P(severe)"
GRADES_LEGEND = "the radiologists' grade of the labelled point (grey: blank)"


@dataclass(frozen=True)
class Mark:
    """A point to draw: pixel column `x`, row `y`, a short label, probabilities `(3,)`."""

    x: float
    y: float
    label: str
    probs: tuple[float, float, float]
    on_slice: bool = True  #: False: the point lies on another slice (drawn hollow)


@dataclass
class Panel:
    """One image `(rows, cols)` with its pixel spacing `(dy, dx)` mm, a title and marks."""

    image: np.ndarray
    spacing: tuple[float, float]
    title: str
    marks: list[Mark] = field(default_factory=list)
    edges: tuple[str, str, str, str] = (
        "",
        "",
        "",
        "",
    )  #: patient direction at left, right, top, bottom


def panel_figure(
    panels: Sequence[Panel],
    title: str = "",
    *,
    width: float | None = None,
    legend: str = PROBABILITIES_LEGEND,
) -> Figure:
    """Panels side by side, each `width` inches wide (default: 5 for one panel, else 3.6), with a
    legend.

    Margins are fixed in inches (no constrained layout: it doubles the drawing time).
    """
    width = width or (5.0 if len(panels) == 1 else 3.6)
    aspect = max(
        p.image.shape[0] * p.spacing[0] / (p.image.shape[1] * p.spacing[1]) for p in panels
    )
    title_lines = max(p.title.count("\n") + 1 for p in panels)
    top, bottom = (0.4 if title else 0.1) + 0.17 * title_lines, 0.75  # inches
    fig = Figure(figsize=(width * len(panels), width * aspect + top + bottom))
    h = fig.get_figheight()
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - top / h, bottom=bottom / h, wspace=0.04)
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        draw_panel(ax, panel)
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold", y=1 - 0.08 / h, va="top")
    pixels = legend_pixels(4 if len(panels) > 1 else 2, legend)
    fig.figimage(pixels, xo=max(0, round((fig.get_figwidth() * DPI - pixels.shape[1]) / 2)), yo=0)
    return fig


@functools.lru_cache(maxsize=8)
def legend_pixels(ncol: int, title: str) -> np.ndarray:
    """The severity legend drawn once per process: RGBA `(h, w, 4)` uint8 at `figures.DPI`.

    Every overlay carries the same legend; laying it out (matplotlib's offset boxes) took a fifth
    of an overlay's drawing time, so it is drawn once and pasted (`benchmarks/bench_overlays.py`).
    """
    fig = Figure(figsize=(10.0, 2.0), dpi=DPI)
    fig.patch.set_alpha(0.0)
    legend = fig.legend(
        handles=_legend_handles(),
        loc="center",
        ncol=ncol,
        fontsize=8,
        frameon=False,
        title=title,
        title_fontsize=7.5,
    )
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = legend.get_window_extent()
    rgba = np.asarray(canvas.buffer_rgba())
    height = rgba.shape[0]
    rows = slice(max(0, math.floor(height - box.y1) - 1), math.ceil(height - box.y0) + 1)
    cols = slice(max(0, math.floor(box.x0) - 1), math.ceil(box.x1) + 1)
    pixels = rgba[rows, cols].copy()
    pixels.flags.writeable = False
    return pixels


def draw_panel(ax, panel: Panel) -> None:  # type: ignore[no-untyped-def]
    """Draw one panel on `ax` in millimetres (x = column * dx, y = row * dy)."""
    dy, dx = panel.spacing
    rows, cols = panel.image.shape
    image = display_image(panel.image, panel.spacing, _axes_px(ax))
    lo, hi = np.percentile(image, [1.0, 99.5]) if image.size else (0.0, 1.0)
    ax.imshow(
        image,
        cmap="gray",
        vmin=lo,
        vmax=max(hi, lo + 1e-6),
        interpolation="bilinear",
        extent=(-0.5 * dx, (cols - 0.5) * dx, (rows - 0.5) * dy, -0.5 * dy),
    )
    height_pt = ax.get_position().height * ax.figure.get_figheight() * 72
    mm_per_pt = rows * dy / max(height_pt, 1.0)
    shifts = _label_shifts([m.y * dy for m in panel.marks], LABEL_GAP_PT * mm_per_pt)
    for m, shift in zip(panel.marks, shifts):
        color = BLANK_COLOR if np.isnan(m.probs).any() else SEVERITY_COLORS[int(np.argmax(m.probs))]
        ax.plot(
            m.x * dx,
            m.y * dy,
            "o",
            ms=8,
            mew=2,
            mec=color if not m.on_slice else "white",
            mfc=color if m.on_slice else "none",
        )
        if m.label:
            right_half = m.x > 0.55 * cols
            ax.annotate(
                m.label,
                (m.x * dx, m.y * dy),
                xytext=(-9 if right_half else 9, -shift / mm_per_pt),
                textcoords="offset points",
                va="center",
                ha="right" if right_half else "left",
                fontsize=7.5,
                color="white",
                annotation_clip=False,
                bbox=dict(boxstyle="round,pad=0.2", fc=color, ec="none", alpha=0.85),
            )
    ax.set_title(panel.title, fontsize=8.5)
    ax.set_xticks([])
    ax.set_yticks([])
    for (x, y, ha, va), letter in zip(
        (
            (0.01, 0.5, "left", "center"),
            (0.99, 0.5, "right", "center"),
            (0.5, 0.99, "center", "top"),
            (0.5, 0.01, "center", "bottom"),
        ),
        panel.edges,
    ):
        ax.text(
            x,
            y,
            letter,
            transform=ax.transAxes,
            ha=ha,
            va=va,
            color="#ffd54f",
            fontsize=9,
            fontweight="bold",
            path_effects=[withStroke(linewidth=2.5, foreground="black")],
        )


def display_image(
    image: np.ndarray, spacing: tuple[float, float], box_px: tuple[float, float]
) -> np.ndarray:
    """`image (rows, cols)` area-averaged down to the pixels it fills in a `box_px (w, h)` box
    (kept as it is when it is not larger), drawn in mm with `spacing (dy, dx)`.

    Drawing a 640 px slice into a 500 px panel made matplotlib resample, window and encode every
    source pixel; drawn at its display size the picture is the same to the eye and the work
    scales with the figure, not the scanner (`benchmarks/bench_overlays.py`).
    """
    rows, cols = image.shape
    if not image.size:
        return image
    dy, dx = spacing
    px_per_mm = min(box_px[0] / (cols * dx), box_px[1] / (rows * dy))
    size = (math.ceil(cols * dx * px_per_mm), math.ceil(rows * dy * px_per_mm))  # (w, h)
    if size[0] >= cols and size[1] >= rows:
        return image
    small = Image.fromarray(np.asarray(image, dtype=np.float32)).resize(
        (min(size[0], cols), min(size[1], rows)), Image.Resampling.BOX
    )
    return np.asarray(small)


def _axes_px(ax) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Width and height of `ax` in pixels of the saved PNG (at `figures.DPI`)."""
    pos, fig = ax.get_position(), ax.figure
    return pos.width * fig.get_figwidth() * DPI, pos.height * fig.get_figheight() * DPI


def _label_shifts(ys: Sequence[float], gap: float) -> list[float]:
    """Downward shifts (same units as `ys`) that keep labels at least `gap` apart, in input
    order."""
    order = np.argsort(ys, kind="stable")
    shifts = [0.0] * len(ys)
    last = -np.inf
    for i in order:
        placed = max(ys[i], last + gap)
        shifts[i], last = placed - ys[i], placed
    return shifts


def save_overlay(
    panels: Sequence[Panel], path: str | Path, title: str = "", legend: str = PROBABILITIES_LEGEND
) -> Path:
    """Draw `panels` and write the PNG atomically."""
    return save_png(panel_figure(panels, title, legend=legend), path)


# --- choosing the slices of a study --------------------------------------------------------------


def study_panels(study: Study, targets: pd.DataFrame) -> dict[str, list[Panel]]:
    """The panels of each overlay in `OVERLAYS` (an empty list when there is nothing to show).

    `targets` holds one row per target with `condition, level, series_id, stack_index,
    slice_index, instance_number, x, y` (None/NaN where not located) and the probabilities in
    `SEVERITIES` columns (the table of `spinegrade.cv.ensemble.StudyPrediction`).
    """
    t2 = _sagittal_panel(study, targets[targets.condition == _SPINAL], SAGITTAL_T2, "spinal canal")
    t1 = [
        _sagittal_panel(study, targets[targets.condition == cond], SAGITTAL_T1, f"{side} foramina")
        for side, cond in _FORAMINA.items()
    ]
    axial = [p for level in LEVELS if (p := _axial_panel(study, targets, level)) is not None]
    return {
        "sagittal_t2": [t2] if t2 else [],
        "sagittal_t1": [p for p in t1 if p],
        "axial_t2": axial,
    }


def _sagittal_panel(study: Study, rows: pd.DataFrame, series_type: str, what: str) -> Panel | None:
    """The slice holding most of `rows`' points (all levels marked), or the series' mid slice."""
    located = rows[rows.series_id.notna()]
    if len(located):
        (sid, k), _ = Counter(
            zip(located.series_id.astype(int), located.stack_index.astype(int))
        ).most_common(1)[0]
        on_stack = located[
            (located.series_id.astype(int) == sid) & (located.stack_index.astype(int) == k)
        ]
        vol = _volume(study, sid, k)
        s = Counter(on_stack.slice_index.astype(int)).most_common(1)[0][0]
        marks = [
            Mark(
                float(r.x),
                float(r.y),
                f"{LEVEL_LABELS[r.level]}  {_probs_text(r)}",
                _probs(r),
                int(r.slice_index) == s,
            )
            for r in on_stack.itertuples()
        ]
        stype = next((x.series_type for x in study.series if x.series_id == sid), series_type)
        return _panel(
            vol, s, f"{what} · instance {vol.instance_numbers[s]}\n{stype} · series {sid}", marks
        )
    series = study.first(series_type)
    if series is None or not series.stacks:
        return None
    vol = max(series.stacks, key=lambda v: v.shape[0])
    s = vol.shape[0] // 2
    return _panel(
        vol, s, f"{what} not located · mid slice\n{series_type} · series {series.series_id}", []
    )


def _axial_panel(study: Study, targets: pd.DataFrame, level: str) -> Panel | None:
    """The axial slice assigned to `level`, with its left and right subarticular points."""
    rows = targets[
        (targets.level == level)
        & targets.condition.isin(_SUBARTICULAR.values())
        & targets.series_id.notna()
    ]
    if not len(rows):
        return None
    first = rows.iloc[0]
    sid, k, s = int(first.series_id), int(first.stack_index), int(first.slice_index)
    vol = _volume(study, sid, k)
    marks = []
    for r in rows.itertuples():
        same = int(r.series_id) == sid and int(r.stack_index) == k
        if same:
            side = "L" if r.condition == _SUBARTICULAR["left"] else "R"
            marks.append(Mark(float(r.x), float(r.y), side, _probs(r), int(r.slice_index) == s))
    title = (
        f"{LEVEL_LABELS[level]} · instance {vol.instance_numbers[s]} · series {sid}\n"
        + " · ".join(
            f"{'left' if r.condition == _SUBARTICULAR['left'] else 'right'} {_probs_text(r)}"
            for r in rows.itertuples()
        )
    )
    return _panel(vol, s, title, marks)


def _panel(vol: Volume, s: int, title: str, marks: list[Mark]) -> Panel:
    dx, dy, _ = vol.spacing
    r, c = vol.orientation[:, 0], vol.orientation[:, 1]
    return Panel(
        np.asarray(vol.pixels[s]),
        (dy, dx),
        title,
        marks,
        (_letter(-r), _letter(r), _letter(-c), _letter(c)),
    )


def _volume(study: Study, series_id: int, stack_index: int) -> Volume:
    series = next(s for s in study.series if s.series_id == series_id)
    return series.stacks[stack_index]


def _letter(v: np.ndarray) -> str:
    """Patient direction letter of the LPS vector `v` (its dominant axis)."""
    axis = int(np.argmax(np.abs(v)))
    return _AXIS_LETTERS[axis][int(v[axis] > 0)]


def _probs(r) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    return tuple(float(getattr(r, s)) for s in SEVERITIES)  # type: ignore[return-value]


def _probs_text(r) -> str:  # type: ignore[no-untyped-def]
    """The probabilities, or for a labelled point (a `grade` column) its grade."""
    if hasattr(r, "grade"):
        return SEVERITY_LABELS[r.grade] if isinstance(r.grade, str) else "blank"
    return " / ".join(f"{p:.2f}" for p in _probs(r))


def _legend_handles() -> list[Line2D]:
    handles = [
        Line2D([], [], marker="o", ls="", mfc=c, mec="white", ms=8, label=SEVERITY_LABELS[s])
        for s, c in zip(SEVERITIES, SEVERITY_COLORS)
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            mfc="none",
            mec="#777777",
            mew=2,
            ms=8,
            label="point on another slice",
        )
    )
    return handles
