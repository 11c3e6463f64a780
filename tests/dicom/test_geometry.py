"""Volume geometry against hand-computed LPS positions."""

from __future__ import annotations

import numpy as np
import pytest

from spinegrade.dicom import load_series
from spinegrade.dicom.geometry import PLANE_TOLERANCE_DEG, plane_of
from spinegrade.errors import DicomError

from .conftest import ramp, rot_x

COS30, SIN30 = np.sqrt(3) / 2, 0.5


@pytest.fixture
def oblique(write):
    """Axial plane rotated 30 deg about x: r = (1,0,0), c = (0, cos30, sin30), n = (0, -sin30,
    cos30).

    PixelSpacing (dy 0.5, dx 0.8); 4 slices 4 mm apart along n from IPP (10, 20, 30); 6 rows x 8
    cols.
    """
    c = rot_x(30) @ [0, 1, 0]
    return load_series(
        write(
            "obl",
            ramp(4, 6, 8),
            origin=(10, 20, 30),
            row_dir=(1, 0, 0),
            col_dir=c,
            pixel_spacing=(0.5, 0.8),
            slice_step=4.0,
        )
    )


def test_oblique_non_square_pixels_hand_computed(oblique):
    v = oblique
    assert v.shape == (4, 6, 8) and v.pixels.dtype == np.uint16
    np.testing.assert_allclose(v.spacing, (0.8, 0.5, 4.0))
    np.testing.assert_allclose(v.normal, [0, -SIN30, COS30], atol=1e-9)
    np.testing.assert_allclose(
        v.orientation, [[1, 0, 0], [0, COS30, -SIN30], [0, SIN30, COS30]], atol=1e-9
    )
    # column index moves along r by dx, row index along c by dy
    np.testing.assert_allclose(v.world_of_pixel(1, 10, 0), [10 + 10 * 0.8, 20, 30], atol=1e-6)
    np.testing.assert_allclose(
        v.world_of_pixel(1, 0, 10), [10, 20 + 5 * COS30, 30 + 5 * SIN30], atol=1e-6
    )
    np.testing.assert_allclose(
        v.world_of_pixel(3, 0, 0), [10, 20 - 8 * SIN30, 30 + 8 * COS30], atol=1e-6
    )
    np.testing.assert_array_equal(v.instance_numbers, [1, 2, 3, 4])
    assert v.slice_index(3) == 2 and v.pixels[2, 1, 3] == 2000 + 1 * 8 + 3


def test_world_voxel_round_trip(oblique):
    pts = np.random.default_rng(0).uniform(-20, 20, size=(50, 3))
    back = oblique.voxel_to_world(oblique.world_to_voxel(pts))
    assert np.max(np.abs(back - pts)) < 1e-4
    vox = np.array([[0.0, 0.0, 0.0], [7.0, 5.0, 3.0], [2.5, 1.25, 1.5]])
    np.testing.assert_allclose(oblique.world_to_voxel(oblique.voxel_to_world(vox)), vox, atol=1e-9)


def test_unknown_instance_is_a_dicom_error(oblique):
    with pytest.raises(DicomError, match="instance number 99 is not in this stack .*instances 1-4"):
        oblique.slice_index(99)


def test_repr_is_short(oblique):
    assert len(repr(oblique)) < 200 and "(4, 6, 8)" in repr(oblique)


@pytest.mark.parametrize(
    ("normal", "plane"),
    [
        ((-1, 0, 0), "sagittal"),
        ((0, 0, 1), "axial"),
        ((0, 1, 0), "coronal"),
        ((0, np.sin(0.2), np.cos(0.2)), "axial"),
        ((0.6, 0, 0.8), "axial"),  # 37 degrees: a tilted lumbar axial block
        ((0.7, 0, 0.714), "oblique"),  # 45.6 degrees
    ],
)
def test_plane_of_a_normal_has_one_tolerance(normal, plane) -> None:
    assert (
        40.0 < PLANE_TOLERANCE_DEG < 45.0
    )  # a 40-degree L5/S1 block is axial; no normal has two planes
    assert plane_of(normal) == plane
    assert plane_of(np.negative(normal)) == plane
