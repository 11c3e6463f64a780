"""Series plans: instance numbers in any order, and projecting a point onto its slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinegrade.constants import SAGITTAL_T1
from spinegrade.data.synthetic.generate import draw_study
from spinegrade.data.synthetic.render import render_series
from spinegrade.data.synthetic.source import LabelSource
from spinegrade.dicom import load_series, make_uid, write_series

from .conftest import study_job


def test_reversed_instance_order_sorts_spatially(tmp_path: Path, label_source: LabelSource) -> None:
    draw = draw_study(study_job(tmp_path, 0, label_source, counts=(1, 0, 0)))
    plan = draw.plans[0]
    plan.instance_numbers = [np.arange(plan.n_slices, 0, -1)]  # instance 1 = last slice in space
    stack = plan.stacks[0]
    pixels = render_series(draw.phantom, plan, np.random.default_rng(0))[0]
    write_series(
        tmp_path / "s",
        pixels,
        origin=stack.positions[0],
        row_dir=stack.row_dir,
        col_dir=stack.col_dir,
        pixel_spacing=stack.spacing,
        slice_positions=stack.positions,
        slice_thickness=stack.thickness,
        series_description=SAGITTAL_T1,
        study_uid=make_uid("t"),
        series_uid=make_uid("t", 1),
        series_number=1,
        instance_numbers=plan.instance_numbers[0].tolist(),
    )
    volume = load_series(tmp_path / "s")
    assert volume.instance_numbers.tolist() == plan.instance_numbers[0].tolist()
    assert np.array_equal(volume.pixels, pixels)
    key = draw.phantom.keypoints[("left_neural_foraminal_narrowing", "l4_l5")]
    instance, x, y, dist = plan.project(key)
    assert np.linalg.norm(volume.world_of_pixel(instance, x, y) - key) == pytest.approx(
        dist, abs=1e-3
    )
