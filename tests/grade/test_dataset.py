"""A target's other view is found through DICOM geometry: its point lands on the nearest slice of
the other view's stacks, where hand arithmetic says it must."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.config import ViewsConfig
from spinegrade.constants import AXIAL_T2, SAGITTAL_T2, TARGETS
from spinegrade.dicom import Series, SeriesMeta, Study, Volume
from spinegrade.grade.dataset import CropParams, locate_study, study_crops, view_located

SAG, AXIAL_UPPER, AXIAL_L45 = 2, 31, 32  # series ids


def _volume(origin, r, c, step, shape, first_instance: int = 1) -> Volume:  # type: ignore[no-untyped-def]
    """A stack with 1 mm pixels: column axis `r`, row axis `c`, slice step vector `step` (LPS)."""
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = r, c, step, origin
    meta = SeriesMeta("1.2", "1.2.3", None, "", shape[1], shape[2], (1.0, 1.0), 3.0, None, Path())
    numbers = np.arange(first_instance, first_instance + shape[0])
    return Volume(np.zeros(shape, dtype=np.uint16), affine, numbers, meta)


@pytest.fixture
def study() -> Study:
    """Sagittal T2: 7 slices along n = -x at x = 9, 6, 3, 0 (midline, slice 3), -3, -6, -9;
    columns along +y from y = -32, rows along -z from z = 40 (64 x 80 pixels).
    Axial T2 series 31 (upper level): z = 10, 14, 18; series 32 (L4/L5): z = -15, -11, -7; both
    with columns along +x from x = -32 and rows along +y from y = -40 (64 x 80 pixels)."""
    sag = _volume((9, -32, 40), (0, 1, 0), (0, 0, -1), (-3, 0, 0), (7, 80, 64))
    upper = _volume((-32, -40, 10), (1, 0, 0), (0, 1, 0), (0, 0, 4), (3, 80, 64))
    l45 = _volume((-32, -40, -15), (1, 0, 0), (0, 1, 0), (0, 0, 4), (3, 80, 64), first_instance=4)
    return Study(
        1,
        Path(),
        [
            Series(SAG, SAGITTAL_T2, "SAG T2", [sag]),
            Series(AXIAL_UPPER, AXIAL_T2, "AX T2", [upper]),
            Series(AXIAL_L45, AXIAL_T2, "AX T2", [l45]),
        ],
    )


def _points(rows: list[tuple[int, int, str, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["series_id", "instance_number", "condition", "level", "x", "y"]
    )


def test_a_sagittal_canal_point_lands_on_the_axial_slice_of_its_level(study: Study) -> None:
    # the L4/L5 canal point: sagittal slice 3 (instance 4, x = 0), column 30 (y = -2), row 50
    # (z = -10); the nearest axial plane is series 32's z = -11 (its slice 1, instance 5), 1 mm
    # away, at column 0 - (-32) = 32, row -2 - (-40) = 38
    crop = CropParams(views=ViewsConfig(spinal="both"))
    located = locate_study(
        study, _points([(SAG, 4, "spinal_canal_stenosis", "l4_l5", 30.0, 50.0)]), crop
    )
    slots = crop.slots()
    assert len(slots) == 30 and len(located) == 30
    t = TARGETS.index(("spinal_canal_stenosis", "l4_l5"))
    sag_slot = slots.target.index(t)
    ax_slot = sag_slot + 1
    assert slots.view[sag_slot : sag_slot + 2] == ("sagittal", "axial")
    own, other = located[sag_slot], located[ax_slot]
    assert own is not None and own.volume is study.series[0].stacks[0] and own.slice_index == 3
    assert other is not None and other.volume is study.series[2].stacks[0]
    assert (other.slice_index, other.view) == (1, "axial")
    assert (other.x, other.y) == pytest.approx((32.0, 38.0))
    assert sum(loc is not None for loc in located) == 2  # no other target has a point
    crops, valid, views = study_crops(located, CropParams(crop_px=9, views=crop.views))
    assert crops.shape == (30, 5, 9, 9) and valid.sum() == 2 and views[ax_slot] == "axial"


def test_axial_only_crops_the_canal_on_the_axial_slice_and_far_points_have_none(
    study: Study,
) -> None:
    crop = CropParams(views=ViewsConfig(spinal="axial"))
    points = _points(
        [
            (SAG, 4, "spinal_canal_stenosis", "l4_l5", 30.0, 50.0),
            # the L1/L2 canal point at z = 40 - 10 = 30: 12 mm above the highest axial plane
            (SAG, 4, "spinal_canal_stenosis", "l1_l2", 30.0, 10.0),
        ]
    )
    located = locate_study(study, points, crop)
    assert len(located) == 25  # one slot per target: the canal's is its axial crop
    l45 = located[TARGETS.index(("spinal_canal_stenosis", "l4_l5"))]
    assert l45 is not None and l45.view == "axial" and l45.volume is study.series[2].stacks[0]
    assert located[TARGETS.index(("spinal_canal_stenosis", "l1_l2"))] is None
    wider = locate_study(study, points, CropParams(views=crop.views, view_distance_mm=12.5))
    l12 = wider[TARGETS.index(("spinal_canal_stenosis", "l1_l2"))]
    assert l12 is not None and l12.volume is study.series[1].stacks[0] and l12.slice_index == 2


def test_an_axial_subarticular_point_lands_on_the_nearest_sagittal_t2_slice(study: Study) -> None:
    # series 32, slice 2 (instance 6, z = -7), column 39 (x = 7), row 40 (y = 0): the nearest
    # sagittal plane is x = 6 (slice 1), 1 mm away, at column 0 - (-32) = 32, row 40 - (-7) = 47
    loc = locate_study(
        study,
        _points([(AXIAL_L45, 6, "left_subarticular_stenosis", "l4_l5", 39.0, 40.0)]),
        CropParams(views=ViewsConfig(subarticular="sagittal")),
    )[TARGETS.index(("left_subarticular_stenosis", "l4_l5"))]
    assert loc is not None and loc.volume is study.series[0].stacks[0]
    assert (loc.slice_index, loc.view) == (1, "sagittal")
    assert (loc.x, loc.y) == pytest.approx((32.0, 47.0))


def test_no_stack_of_the_view_means_a_missing_crop(study: Study) -> None:
    sagittal_only = Study(1, Path(), study.series[:1])
    crop = CropParams(crop_px=9, views=ViewsConfig(spinal="both"))
    located = locate_study(
        sagittal_only, _points([(SAG, 4, "spinal_canal_stenosis", "l4_l5", 30.0, 50.0)]), crop
    )
    sag_slot = crop.slots().target.index(TARGETS.index(("spinal_canal_stenosis", "l4_l5")))
    assert located[sag_slot] is not None and located[sag_slot + 1] is None
    _, valid, _ = study_crops(located, crop)
    assert valid.tolist() == [i == sag_slot for i in range(30)]
    assert view_located(study, None, "spinal", "axial", 10.0) is None
