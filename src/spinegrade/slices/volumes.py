"""PNG images as `Volume`s with a nominal geometry, so that the grader's crops work unchanged.

A PNG lost its DICOM geometry; `crop_2p5d` needs one. Each image therefore becomes a small
`Volume` in a standard patient orientation with a *nominal* pixel spacing:

- A Sagittal T1 slice is one slice, columns anterior -> posterior (+y), rows superior -> inferior
  (-z) (the RSNA sagittal orientation, so the crop's canonical sagittal frame is the image's own).
  The PNG was resized to 250 x 250 from `orig_rows x orig_cols`, which did not keep the aspect
  where the original was not square. The original's pixels are taken to be square and its longer
  side to span `fov_mm` (`slices.fov_mm`, default 300 mm: real lumbar Sagittal T1 fields of view
  are about 240-350 mm); so a PNG pixel is `fov/max(orig) * orig_cols/cols` mm wide and
  `fov/max(orig) * orig_rows/rows` mm tall, and crops in mm are anatomically isotropic again.
- An Axial T2 crop is three slices (its colour channels, in order), columns patient right -> left
  (+x: the image's right side is the patient's left), rows anterior -> posterior (+y), the
  canonical axial frame, so `mirror_crop` flips the columns: the patient's left/right mirror.
  Its pixels are square and its longer side spans `slices.crop_width_mm`, i.e. every crop is
  resized to one nominal width with its aspect kept (see `configs/crops_cpu.yaml` for why).

Only ratios of these millimetres matter (the crop's side against the image); the absolute scale
is a convention, recorded in the config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinegrade.dicom.geometry import SeriesMeta, Volume

#: (column, row, slice) directions in LPS of the two nominal orientations.
SAGITTAL_AXES = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
AXIAL_AXES = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def slice_spacing(
    shape: tuple[int, int], orig_shape: tuple[int, int], fov_mm: float
) -> tuple[float, float]:
    """Nominal `(dx, dy)` mm of a PNG of `shape (rows, cols)` resized from `orig_shape`."""
    rows, cols = shape
    orig_rows, orig_cols = orig_shape
    pixel = fov_mm / max(orig_rows, orig_cols)
    return pixel * orig_cols / cols, pixel * orig_rows / rows


def slice_volume(
    pixels: np.ndarray, orig_shape: tuple[int, int], fov_mm: float, path: str | Path = ""
) -> Volume:
    """A Sagittal T1 PNG `(rows, cols)` as a one-slice `Volume` with its nominal spacing."""
    dx, dy = slice_spacing(pixels.shape, orig_shape, fov_mm)
    return _volume(pixels[None], SAGITTAL_AXES, (dx, dy, 1.0), path, "Sagittal T1 (PNG)")


def crop_volume(pixels: np.ndarray, side_mm: float, path: str | Path = "") -> Volume:
    """An Axial T2 crop `(channels, rows, cols)` as a `Volume` of `channels` slices whose longer
    side spans `side_mm` (square pixels)."""
    d = side_mm / max(pixels.shape[1:])
    return _volume(pixels, AXIAL_AXES, (d, d, d), path, "Axial T2 (PNG crop)")


def _volume(
    pixels: np.ndarray,
    axes: np.ndarray,
    spacing: tuple[float, float, float],
    path: str | Path,
    description: str,
) -> Volume:
    affine = np.eye(4)
    affine[:3, :3] = axes.T * np.asarray(spacing)[None, :]
    rows, cols = pixels.shape[1:]
    meta = SeriesMeta(
        study_uid="",
        series_uid="",
        series_id=None,
        description=description,
        rows=int(rows),
        cols=int(cols),
        pixel_spacing=(float(spacing[1]), float(spacing[0])),
        slice_thickness=None,
        manufacturer=None,
        path=Path(path),
    )
    return Volume(np.ascontiguousarray(pixels), affine, np.arange(len(pixels)), meta)
