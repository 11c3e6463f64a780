"""Crops land where asked, in millimetres, in the canonical frame, whatever the stack's geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinegrade.dicom import load_series, make_uid, write_series
from spinegrade.grade.crops import crop_2p5d, mirror_crop, normalize_crop

SAG_R, SAG_C = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])  # n = r x c = -x
DX, DY, STEP = 0.5, 0.8, 3.0  # non-square pixels: 0.5 mm between columns, 0.8 mm between rows


def _write(folder: Path, pixels: np.ndarray, r: np.ndarray, c: np.ndarray, **kw) -> Path:
    write_series(
        folder,
        pixels,
        origin=(10.0, -20.0, 30.0),
        row_dir=r,
        col_dir=c,
        pixel_spacing=(DY, DX),
        slice_step=STEP,
        slice_thickness=STEP,
        series_description="test",
        study_uid=make_uid("s"),
        series_uid=make_uid(folder.name),
        series_number=1,
        **kw,
    )
    return folder


def test_sagittal_dots_land_in_mm_with_non_square_pixels_and_a_reversed_stack(
    tmp_path: Path,
) -> None:
    pix = np.full((9, 64, 48), 100, dtype=np.uint16)
    pix[3, 30, 20] = 3000  # the labelled point
    pix[3, 30, 30] = 2000  # 10 columns = 5 mm posterior (+y)
    pix[3, 35, 20] = 1500  # 5 rows = 4 mm inferior (-z)
    pix[4, 30, 20] = 1000  # the next slice along n = -x: patient right
    # instance numbers run against the spatial order: slice k (sorted along n) is instance 9 - k
    vol = load_series(
        _write(tmp_path / "sag", pix, SAG_R, SAG_C, instance_numbers=list(range(9, 0, -1)))
    )
    assert list(vol.instance_numbers) == list(range(9, 0, -1))
    world = vol.world_of_pixel(6, 20.0, 30.0)
    k, row, col = 3, 30, 20
    assert np.allclose(vol.world_to_voxel([world])[0], [col, row, k])

    crop = crop_2p5d(
        vol, vol.slice_index(6), 20.0, 30.0, view="sagittal", slices=5, crop_mm=16.5, crop_px=33
    )  # 0.5 mm per crop pixel, centre pixel 16
    assert crop.shape == (5, 33, 33) and crop.dtype == np.float32
    centre = crop[2]
    assert np.unravel_index(centre.argmax(), centre.shape) == (16, 16)
    assert centre[16, 16] == pytest.approx(3000)
    assert centre[16, 26] == pytest.approx(2000)  # posterior: to the right, 5 mm = 10 px
    assert centre[24, 16] == pytest.approx(1500)  # inferior: down, 4 mm = 8 px
    # channels run towards patient left (+x); the dot on the slice to the patient's right is channel
    # 1
    assert crop[1, 16, 16] == pytest.approx(1000)
    assert crop[3].max() == pytest.approx(100) and crop[0].max() == pytest.approx(100)


def test_axial_frame_puts_patient_left_right_and_posterior_down(tmp_path: Path) -> None:
    r, c = (
        np.array([-1.0, 0.0, 0.0]),
        np.array([0.0, 1.0, 0.0]),
    )  # r = patient right: an unusual scanner
    pix = np.full((5, 40, 40), 50, dtype=np.uint16)
    pix[2, 20, 20] = 900
    pix[2, 20, 14] = 700  # 6 columns along r = -x: 3 mm towards patient left
    pix[2, 25, 20] = 600  # 5 rows along c = +y: 4 mm posterior
    vol = load_series(_write(tmp_path / "ax", pix, r, c))
    crop = crop_2p5d(vol, 2, 20.0, 20.0, view="axial", slices=3, crop_mm=20.5, crop_px=41)
    assert crop[1, 20, 20] == pytest.approx(900)
    assert crop[1, 20, 26] == pytest.approx(700)  # patient left on the crop's right, 3 mm = 6 px
    assert crop[1, 28, 20] == pytest.approx(600)  # posterior down, 4 mm = 8 px
    mirrored = mirror_crop(crop, "axial")
    assert mirrored[1, 20, 14] == pytest.approx(700)  # the mirrored patient's left is the old right


def test_edge_channels_repeat_the_end_slice_and_outside_is_zero(tmp_path: Path) -> None:
    pix = (np.arange(3)[:, None, None] * 100 + 100 + np.zeros((3, 16, 16))).astype(np.uint16)
    vol = load_series(_write(tmp_path / "edge", pix, SAG_R, SAG_C))
    crop = crop_2p5d(vol, 0, 0.0, 0.0, view="sagittal", slices=5, crop_mm=8.0, crop_px=8)
    # step is -1 (n = -x): channels 0..4 sample slices 2, 1, 0, 0, 0 (clamped)
    assert [crop[k, 7, 7] for k in range(5)] == pytest.approx([300, 200, 100, 100, 100])
    assert crop[:, 0, 0] == pytest.approx(0.0)  # up-left of pixel (0, 0): outside the image


def test_normalize_crop_is_robust_and_flat_safe() -> None:
    rng = np.random.default_rng(0)
    crop = rng.normal(500, 50, size=(5, 32, 32)).astype(np.float32)
    crop[0, 0, 0] = 1e6  # one hot voxel does not squash the rest
    out = normalize_crop(crop)
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.35 < float(np.median(out)) < 0.65
    assert not normalize_crop(np.full((2, 4, 4), 7.0)).any()
