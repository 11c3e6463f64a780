"""Sorting slices in space and splitting series into consistent stacks."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage

from spinegrade.dicom import load_many, load_series, load_stacks
from spinegrade.dicom.series import rescale
from spinegrade.errors import DicomError

from .conftest import ramp, rot_x


def test_shuffled_files_and_names_sorted_by_position(write):
    px = ramp(6, 4, 5)
    perm = np.random.default_rng(1).permutation(6)
    z = np.arange(6) * 3.0
    names = [f"x{i}.dcm" for i in np.random.default_rng(2).permutation(6)]
    folder = write(
        "s",
        px[perm],
        slice_positions=np.c_[np.zeros(6), np.zeros(6), z[perm]],
        instance_numbers=[int(k) + 1 for k in perm],
        file_names=names,
    )
    v = load_series(folder)
    np.testing.assert_array_equal(v.pixels, px)
    np.testing.assert_array_equal(v.instance_numbers, [1, 2, 3, 4, 5, 6])
    np.testing.assert_allclose(v.affine[:3, 3], [0, 0, 0])
    assert v.spacing[2] == pytest.approx(3.0)


def test_reversed_stack_instance_numbers_follow_pixels(write):
    px = ramp(5, 4, 4)
    # instance 1 is the most superior slice: instance numbers decrease along n = +z
    folder = write("s", px, origin=(0, 0, 12), slice_step=-3.0, instance_numbers=[1, 2, 3, 4, 5])
    v = load_series(folder)
    np.testing.assert_array_equal(v.instance_numbers, [5, 4, 3, 2, 1])
    np.testing.assert_array_equal(v.pixels, px[::-1])
    # each slice keeps its own file's SOP Instance UID, in the sorted order
    files = [pydicom.dcmread(folder / f"{i}.dcm") for i in range(1, 6)]
    by_number = {ds.InstanceNumber: ds.SOPInstanceUID for ds in files}
    assert v.sop_instance_uids == tuple(by_number[i] for i in (5, 4, 3, 2, 1))
    assert v.sop_class_uids == (MRImageStorage,) * 5
    np.testing.assert_allclose(v.world_of_pixel(1, 0, 0), [0, 0, 12])
    np.testing.assert_allclose(v.world_of_pixel(5, 0, 0), [0, 0, 0])
    assert v.slice_index(5) == 0


def test_sagittal_slices_sorted_along_normal_not_x(write):
    # r = +y, c = -z -> n = -x: sorted slices go from patient left (+x) to right (-x)
    folder = write(
        "sag",
        ramp(3, 4, 4),
        origin=(-3, 0, 0),
        row_dir=(0, 1, 0),
        col_dir=(0, 0, -1),
        slice_positions=[[-3, 0, 0], [3, 0, 0], [0, 0, 0]],
    )
    v = load_series(folder)
    np.testing.assert_allclose(v.normal, [-1, 0, 0])
    np.testing.assert_array_equal(v.instance_numbers, [2, 3, 1])
    np.testing.assert_allclose(v.voxel_to_world([[0, 0, 0], [0, 0, 2]])[:, 0], [3, -3])


@pytest.mark.parametrize(
    "slopes, intercepts, dtype, first",
    [
        ([1, 1], [0, 0], np.uint16, 7),
        ([2, 2], [-1024, -1024], np.int16, 2 * 7 - 1024),
        ([1, 3], [0, 5], np.uint16, 7),
        ([0.5, 0.5], [0, 0], np.float32, 3.5),
    ],
)
def test_rescale_keeps_integers(slopes, intercepts, dtype, first):
    raw = [np.full((2, 2), 7, np.uint16), np.full((2, 2), 9, np.uint16)]
    out = rescale(raw, slopes, intercepts)
    assert out.dtype == dtype and out[0, 0, 0] == first
    assert out[1, 0, 0] == 9 * slopes[1] + intercepts[1]


def test_rescale_tags_applied_on_load(write):
    v = load_series(write("s", ramp(2, 3, 3), rescale_slope=2, rescale_intercept=-100))
    assert v.pixels.dtype == np.int16
    np.testing.assert_array_equal(v.pixels, ramp(2, 3, 3).astype(np.int32) * 2 - 100)


def test_gap_splits_stacks_and_load_series_refuses(write):
    z = [0, 3, 6, 9, 30, 33, 36]  # jump of 21 mm > 1.5 x median step
    folder = write("s", ramp(7, 4, 4), slice_positions=np.c_[np.zeros(7), np.zeros(7), z])
    stacks = load_stacks(folder)
    assert [v.shape[0] for v in stacks] == [4, 3]
    np.testing.assert_array_equal(stacks[1].instance_numbers, [5, 6, 7])
    with pytest.raises(DicomError, match=r"series holds 2 stacks \(4, 3 slices\); use load_stacks"):
        load_series(folder)


def test_repeated_positions_split_into_two_stacks(write):
    z = [0, 3, 6, 9, 0, 3, 6, 9]  # the same block acquired twice (instances 1-4 and 5-8)
    folder = write("s", ramp(8, 4, 4), slice_positions=np.c_[np.zeros(8), np.zeros(8), z])
    stacks = load_stacks(folder)
    assert sorted(v.instance_numbers.tolist() for v in stacks) == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_orientation_and_size_changes_split(write, tmp_path):
    write("s", ramp(3, 4, 4), origin=(0, 0, 0), instance_numbers=[1, 2, 3])
    tilted = rot_x(20)
    write(
        "s",
        ramp(3, 4, 4),
        origin=(0, 0, 40),
        row_dir=(1, 0, 0),
        col_dir=tilted @ [0, 1, 0],
        instance_numbers=[4, 5, 6],
    )
    write("s", ramp(3, 6, 4), origin=(0, 0, 80), instance_numbers=[7, 8, 9])
    write(
        "s",
        ramp(3, 4, 4),
        origin=(0, 0, 89),
        pixel_spacing=(0.5, 0.5),
        instance_numbers=[10, 11, 12],
    )
    stacks = load_stacks(tmp_path / "s")
    assert [v.instance_numbers.tolist() for v in stacks] == [
        [1, 2, 3],
        [4, 5, 6],
        [7, 8, 9],
        [10, 11, 12],
    ]
    assert [v.shape[1] for v in stacks] == [4, 4, 6, 4]
    np.testing.assert_allclose([v.spacing[:2] for v in stacks], [(1.0, 1.0)] * 3 + [(0.5, 0.5)])


def test_process_pool_gives_the_same_volumes(write):
    folder = write("s", ramp(6, 8, 8), slice_step=2.0)
    a, b = load_stacks(folder), load_stacks(folder, workers=2)
    assert len(a) == len(b) == 1
    np.testing.assert_array_equal(a[0].pixels, b[0].pixels)
    np.testing.assert_array_equal(a[0].affine, b[0].affine)


def test_load_many_reports_bad_series_and_finishes(write, tmp_path):
    good = write("good", ramp(2, 4, 4))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "1.dcm").write_bytes(b"nope")
    for workers in (0, 2):
        out = load_many([good, tmp_path / "bad", good], workers=workers, progress=False)
        assert isinstance(out[1], DicomError) and "bad/1.dcm" in str(out[1])
        assert [v[0].shape for v in (out[0], out[2])] == [(2, 4, 4), (2, 4, 4)]


def test_single_slice_stack_uses_slice_thickness(write):
    v = load_series(write("s", ramp(1, 4, 4), slice_thickness=5.0))
    assert v.spacing[2] == pytest.approx(5.0) and v.shape == (1, 4, 4)


def test_jittered_positions_and_instance_gaps_stay_one_stack(write):
    z = np.arange(6) * 4.0 + np.array([0, 0.01, -0.01, 0.02, 0, -0.02])
    v = load_series(
        write(
            "s",
            ramp(6, 4, 4),
            slice_positions=np.c_[np.zeros(6), np.zeros(6), z],
            instance_numbers=[2, 4, 9, 10, 11, 30],
        )
    )
    np.testing.assert_array_equal(v.instance_numbers, [2, 4, 9, 10, 11, 30])
    assert v.spacing[2] == pytest.approx(4.0, abs=0.01)
    assert abs(v.world_of_pixel(9, 0, 0)[2] - z[2]) < 0.05
