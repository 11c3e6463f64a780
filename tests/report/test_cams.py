"""The Grad-CAM PNG: the grey crop beside the crop with the map blended in, the point marked."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from spinegrade.report.cams import GAP_PX, MAX_ALPHA, CamImage, cam_png, cam_rgb, save_cam


def _cam() -> CamImage:
    image = np.linspace(0, 1, 24 * 24, dtype=np.float32).reshape(24, 24)
    heat = np.zeros((24, 24), dtype=np.float32)
    heat[2:6, 16:20] = 1.0  # a hot patch away from the centre
    return CamImage(image, heat, "severe", 9.0)


def test_halves_crop_and_blend() -> None:
    cam = _cam()
    rgb = cam_rgb(cam).astype(float) / 255
    scale = 4  # 24 px -> 96 px halves
    assert rgb.shape == (96, 2 * 96 + GAP_PX, 3)
    left, right = rgb[:, :96], rgb[:, 96 + GAP_PX :]
    np.testing.assert_allclose(left[0, 0], cam.image[0, 0], atol=1 / 255)  # grey crop
    np.testing.assert_allclose(left[10 * scale, 3 * scale], [cam.image[10, 3]] * 3, atol=1 / 255)
    np.testing.assert_allclose(right[10 * scale, 3 * scale], left[10 * scale, 3 * scale])  # cold
    hot = right[3 * scale, 17 * scale]
    grey = cam.image[3, 17]
    assert np.abs(hot - grey).max() > MAX_ALPHA * 0.3  # coloured where the map is high
    assert (rgb[48, 48] == 1.0).all() and (rgb[48, 96 + GAP_PX + 48] == 1.0).all()  # the point


def test_png_bytes_and_atomic_file(tmp_path: Path) -> None:
    cam = _cam()
    png = cam_png(cam)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), cam_rgb(cam))
    path = save_cam(cam, tmp_path / "cam" / "1_x.png")
    assert path.read_bytes() == png and [p.name for p in path.parent.iterdir()] == ["1_x.png"]
