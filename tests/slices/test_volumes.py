"""PNG images as nominal volumes: crops are isotropic again, and the crop mirror is the image's."""

from __future__ import annotations

import numpy as np
import pytest

from spinegrade.grade.crops import crop_2p5d, mirror_crop
from spinegrade.slices.volumes import crop_volume, slice_spacing, slice_volume


def test_the_nominal_spacing_undoes_the_stretch_of_a_non_square_original() -> None:
    # a 512 x 384 original (rows x cols) resized to 250 x 250: rows squeezed more than columns
    dx, dy = slice_spacing((250, 250), (512, 384), 300.0)
    assert dy == pytest.approx(300.0 / 250) and dx == pytest.approx(300.0 * 384 / 512 / 250)
    assert slice_spacing((250, 250), (384, 384), 300.0) == pytest.approx((1.2, 1.2))


def test_a_circle_of_the_original_is_round_in_the_crop() -> None:
    # a disc of radius 40 original pixels in a 512 x 384 original, as the 250 x 250 PNG shows it
    rows, cols = np.mgrid[:250, :250]
    y, x = rows * 512 / 250, cols * 384 / 250
    png = (((x - 192) ** 2 + (y - 256) ** 2) <= 40**2).astype(np.uint8) * 200
    assert (png.sum(axis=0) > 0).sum() - (png.sum(axis=1) > 0).sum() > 10  # 52 wide, 39 tall
    vol = slice_volume(png, (512, 384), 300.0)
    crop = crop_2p5d(
        vol, 0, 125 - 0.5, 125 - 0.5, view="sagittal", slices=1, crop_mm=80.0, crop_px=81
    )[0]
    wide, tall = (crop.sum(axis=0) > 100).sum(), (crop.sum(axis=1) > 100).sum()
    assert wide == pytest.approx(tall, abs=1)  # round again: isotropic millimetres
    assert vol.plane == "sagittal" and vol.shape == (1, 250, 250)


def test_a_crop_volume_spans_its_nominal_width_and_its_mirror_flips_the_columns() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (3, 20, 30), dtype=np.uint8)
    vol = crop_volume(pixels, 30.0)
    assert vol.spacing == pytest.approx((1.0, 1.0, 1.0)) and vol.plane == "axial"
    flipped = crop_volume(np.ascontiguousarray(pixels[:, :, ::-1]), 30.0)
    kw = dict(view="axial", slices=3, crop_mm=12.0, crop_px=12)
    a = crop_2p5d(vol, 1, 14.5 + 6, 9.5, **kw)  # 6 px to the image's right: the patient's left
    b = crop_2p5d(flipped, 1, 14.5 - 6, 9.5, **kw)
    np.testing.assert_allclose(mirror_crop(a, "axial"), b, atol=1e-4)
    # crop pixel (6, 6) is 0.5 mm right of and below the centre: pixel (row 10, col 21), and the
    # channels stay in order
    np.testing.assert_allclose(a[:, 6, 6], pixels[:, 10, 21], atol=1e-3)
