"""Overlays: slice choice, marks in millimetres, patient directions, hollow off-slice points,
PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import LEVELS, SEVERITIES, TARGETS
from spinegrade.dicom import load_study
from spinegrade.report.figures import SEVERITY_COLORS
from spinegrade.report.overlays import (
    PROBABILITIES_LEGEND,
    Mark,
    Panel,
    display_image,
    draw_panel,
    legend_pixels,
    panel_figure,
    save_overlay,
    study_panels,
)
from tests.conftest import MakeStudy

SAG_T1, SAG_T2, AXIAL = 1, 2, 3  # series ids of the conftest `make_study`


def _targets(located: bool = True) -> pd.DataFrame:
    """One row per target: canal on T2 slice 2 (L5/S1 on slice 3), foramina on T1 slices 1 / 3,
    subarticular on axial slice = level index; severe at L4/L5 canal, else normal."""
    rows = []
    for cond, level in TARGETS:
        k = LEVELS.index(level)
        if cond == "spinal_canal_stenosis":
            sid, s = SAG_T2, 3 if level == "l5_s1" else 2
        elif "foraminal" in cond:
            sid, s = SAG_T1, 1 if cond.startswith("left") else 3
        else:
            sid, s = AXIAL, k
        probs = (
            [0.1, 0.2, 0.7]
            if (cond, level) == ("spinal_canal_stenosis", "l4_l5")
            else [0.8, 0.15, 0.05]
        )
        rows.append(
            {
                "condition": cond,
                "level": level,
                **dict(zip(SEVERITIES, probs)),
                "series_id": sid if located else None,
                "stack_index": 0 if located else None,
                "slice_index": s if located else None,
                "instance_number": s + 1 if located else None,
                "x": 4.0 + 5 * k if located else np.nan,
                "y": 6.0 if located else np.nan,
            }
        )
    return pd.DataFrame(rows)


def test_study_panels_pick_slices_and_directions(make_study: MakeStudy) -> None:
    study = load_study(make_study())
    panels = study_panels(study, _targets())
    assert [len(panels[k]) for k in ("sagittal_t2", "sagittal_t1", "axial_t2")] == [1, 2, 5]
    t2 = panels["sagittal_t2"][0]
    np.testing.assert_array_equal(t2.image, study.first("Sagittal T2/STIR").stacks[0].pixels[2])
    assert len(t2.marks) == 5 and [m.on_slice for m in t2.marks] == [True] * 4 + [False]
    assert t2.marks[3].label.startswith("L4/L5") and t2.marks[3].probs == (0.1, 0.2, 0.7)
    assert t2.edges == ("A", "P", "S", "I")  # sagittal: columns run posterior, rows run inferior
    left, right = panels["sagittal_t1"]
    assert "left" in left.title and "right" in right.title
    np.testing.assert_array_equal(left.image, study.first("Sagittal T1").stacks[0].pixels[1])
    axial = panels["axial_t2"]
    assert axial[0].edges == ("R", "L", "A", "P")  # radiological: patient left on the image right
    assert sorted(m.label for m in axial[2].marks) == ["L", "R"]
    np.testing.assert_array_equal(axial[2].image, study.first("Axial T2").stacks[0].pixels[2])


def test_unlocated_targets_show_the_mid_slice_or_nothing(make_study: MakeStudy) -> None:
    study = load_study(make_study())
    panels = study_panels(study, _targets(located=False))
    assert panels["axial_t2"] == []
    (t2,) = panels["sagittal_t2"]
    assert t2.marks == [] and "not located" in t2.title
    np.testing.assert_array_equal(t2.image, study.first("Sagittal T2/STIR").stacks[0].pixels[2])


def test_marks_are_drawn_in_millimetres_and_coloured(tmp_path: Path) -> None:
    image = np.arange(20 * 10, dtype=np.uint16).reshape(20, 10)
    panel = Panel(
        image,
        (0.5, 2.0),
        "non-square pixels",
        [
            Mark(3.0, 4.0, "on", (0.1, 0.1, 0.8)),
            Mark(1.0, 2.0, "off", (0.9, 0.05, 0.05), on_slice=False),
        ],
    )
    fig = panel_figure([panel])
    ax = fig.axes[0]
    extent = ax.images[0].get_extent()
    assert extent == pytest.approx((-1.0, 19.0, 9.75, -0.25))  # 10 cols x 2 mm, 20 rows x 0.5 mm
    on, off = ax.lines[:2]
    assert tuple(on.get_xydata()[0]) == (6.0, 2.0) and tuple(off.get_xydata()[0]) == (2.0, 1.0)
    assert on.get_markerfacecolor() == SEVERITY_COLORS[2]
    assert off.get_markerfacecolor() == "none" and off.get_markeredgecolor() == SEVERITY_COLORS[0]
    path = save_overlay([panel, panel], tmp_path / "o.png", "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_panel_writes_direction_letters() -> None:
    from spinegrade.report.figures import new_figure

    fig, axes = new_figure(3, 3)
    draw_panel(axes[0, 0], Panel(np.zeros((4, 4)), (1.0, 1.0), "t", [], ("R", "L", "A", "P")))
    assert [t.get_text() for t in axes[0, 0].texts] == ["R", "L", "A", "P"]


def test_label_shifts_keep_labels_apart() -> None:
    from spinegrade.report.overlays import _label_shifts

    ys = [10.0, 30.0, 11.0, 50.0]
    shifts = _label_shifts(ys, 4.0)
    placed = sorted(y + s for y, s in zip(ys, shifts))
    assert min(np.diff(placed)) >= 4.0 - 1e-9
    assert shifts[0] == 0.0 and shifts[3] == 0.0 and shifts[2] == pytest.approx(3.0)


def test_display_image_area_averages_down_to_the_panel() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4)  # rows 0-3, cols 0-3
    # a 2 x 2 px box: each output pixel is the mean of a 2 x 2 block
    small = display_image(image, (1.0, 1.0), (2.0, 2.0))
    assert small.shape == (2, 2)
    np.testing.assert_allclose(small, [[2.5, 4.5], [10.5, 12.5]])
    # pixels twice as tall as wide (dy 2 mm, dx 1 mm): the image is 4 mm wide, 8 mm tall; a 2 x 4
    # box fits it at 0.5 px/mm, giving 2 columns and 4 rows (the rows kept as they are)
    tall = display_image(image, (2.0, 1.0), (2.0, 4.0))
    assert tall.shape == (4, 2)
    np.testing.assert_allclose(tall[:, 0], [0.5, 4.5, 8.5, 12.5])
    # an image no larger than its panel is drawn as it is (the same object)
    assert display_image(image, (1.0, 1.0), (10.0, 10.0)) is image


def test_legend_is_drawn_once_per_process() -> None:
    first = legend_pixels(4, "the legend")
    assert first is legend_pixels(4, "the legend")
    assert first.dtype == np.uint8 and first.shape[2] == 4 and not first.flags.writeable
    # wider than tall, mostly transparent, with the severity colours in it
    assert first.shape[1] > 3 * first.shape[0] and (first[..., 3] == 0).mean() > 0.5
    severe = tuple(int(SEVERITY_COLORS[2][i : i + 2], 16) for i in (1, 3, 5))
    assert (np.abs(first[..., :3].astype(int) - severe).sum(axis=2) < 30).any()
    # a figure carries it at the bottom, centred
    fig = panel_figure([Panel(np.zeros((64, 64)), (1.0, 1.0), "t")], "title")
    (pasted,) = fig.images
    assert pasted.get_array().shape == legend_pixels(2, PROBABILITIES_LEGEND).shape
