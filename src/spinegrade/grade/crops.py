"""2.5D crops around a labelled point, resampled to a fixed size in millimetres.

A crop is `(slices, crop_px, crop_px)` float32: `slices` neighbouring slices of the stack as
channels, each sampled on a square grid of side `crop_mm` centred on the point. The grid is laid out
in a *canonical frame* per view, in patient (LPS) directions rather than image axes, so every crop
of a view looks the same way whatever the scanner's orientation, slice order or pixel spacing:

| view     | crop columns (left -> right) | crop rows (top -> bottom) | channels (first -> last) |
|----------|------------------------------|---------------------------|--------------------------|
| sagittal | anterior -> posterior (+y)   | superior -> inferior (-z) | patient right -> left (+x) |
| axial    | patient right -> left (+x)   | anterior -> posterior (+y)| inferior -> superior (+z)  |

(each direction projected into the slice plane; the channel direction is the slice normal, signed).
Pixel spacing (dx along columns, dy along rows) is honoured exactly: grid offsets in mm are divided
by each axis' own spacing. Channels beyond the ends of the stack repeat the edge slice.

Mirroring the patient left/right (x -> -x) is therefore a fixed operation on a crop: reverse the
channels of a sagittal crop (foraminal and spinal alike: the in-plane image does not change), flip
the columns of an axial crop. See :func:`mirror_crop`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from spinegrade.dicom.geometry import Volume

#: Canonical (column, row, channel) directions in LPS per view; see the module docstring.
SAGITTAL_FRAME = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
AXIAL_FRAME = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class CropJitter:
    """Geometric training jitter of one crop (all zero = the exact crop).

    `shift_mm` (2,) moves the centre along the crop's (column, row) axes, `slice_shift` moves the
    centre slice, `angle_deg` rotates and `scale` zooms the sampling grid in-plane.
    """

    shift_mm: tuple[float, float] = (0.0, 0.0)
    slice_shift: int = 0
    angle_deg: float = 0.0
    scale: float = 1.0


NO_JITTER = CropJitter()


def crop_frame(volume: Volume, view: str) -> tuple[np.ndarray, np.ndarray, int]:
    """In-plane unit axes of the crop `(h, v)` in LPS (3,) each, and the slice-index step per
    channel.

    `h` is the canonical column direction projected into the slice plane, `v` the canonical row
    direction made orthogonal to `h` in that plane; the step is +1 or -1 so that channels advance
    along the canonical channel direction whatever the stack's slice order.
    """
    frame = AXIAL_FRAME if view == "axial" else SAGITTAL_FRAME
    n = volume.normal
    h = _in_plane(frame[0], n, fallback=volume.orientation[:, 0])
    v = _in_plane(frame[1] - (frame[1] @ h) * h, n, fallback=np.cross(n, h))
    step = 1 if float(n @ frame[2]) >= 0 else -1
    return h, v, step


def crop_2p5d(
    volume: Volume,
    slice_index: int,
    x: float,
    y: float,
    *,
    view: str,
    slices: int,
    crop_mm: float,
    crop_px: int,
    jitter: CropJitter = NO_JITTER,
) -> np.ndarray:
    """Raw 2.5D crop `(slices, crop_px, crop_px)` float32 around pixel (`x` col, `y` row) of a
    slice.

    Crop pixel (i, j) of channel k samples (bilinear) slice `slice_index + step*(k - slices//2)`
    (clamped to the stack) at the in-plane point `centre + a_j*h + a_i*v` mm, with
    `a_i = (i + 0.5 - crop_px/2) * crop_mm/crop_px`; so for odd `crop_px` the point lands exactly
    on the centre pixel. Outside the image the value is 0.
    """
    h, v, step = crop_frame(volume, view)
    theta = np.deg2rad(jitter.angle_deg)
    h, v = np.cos(theta) * h + np.sin(theta) * v, -np.sin(theta) * h + np.cos(theta) * v
    r, c = volume.orientation[:, 0], volume.orientation[:, 1]
    dx, dy, _ = volume.spacing
    # mm -> pixel offsets along (col, row) of one step along h and along v
    to_px = np.array(
        [[h @ r / dx, v @ r / dx], [h @ c / dy, v @ c / dy]]
    )  # (2: col,row) x (2: h,v)
    offsets = grid_offsets_mm(crop_mm * jitter.scale, crop_px)
    centre = np.array([x, y]) + to_px @ np.asarray(jitter.shift_mm, dtype=np.float64)
    cols = centre[0] + to_px[0, 0] * offsets[None, :] + to_px[0, 1] * offsets[:, None]  # (P, P)
    rows = centre[1] + to_px[1, 0] * offsets[None, :] + to_px[1, 1] * offsets[:, None]
    n_slices = volume.shape[0]
    centre_slice = slice_index + step * jitter.slice_shift
    ks = np.clip(centre_slice + step * (np.arange(slices) - slices // 2), 0, n_slices - 1)
    coords = np.stack(
        [
            np.broadcast_to(ks[:, None, None], (slices, crop_px, crop_px)),
            np.broadcast_to(rows, (slices, crop_px, crop_px)),
            np.broadcast_to(cols, (slices, crop_px, crop_px)),
        ]
    ).astype(np.float64)
    return map_coordinates(
        volume.pixels, coords, order=1, mode="constant", cval=0.0, output=np.float32
    )


def grid_offsets_mm(crop_mm: float, crop_px: int) -> np.ndarray:
    """Offsets `(crop_px,)` in mm of the crop's pixel centres from its point, along rows or
    columns alike: `(i + 0.5 - crop_px/2) * crop_mm/crop_px`."""
    return (np.arange(crop_px) + 0.5 - crop_px / 2) * crop_mm / crop_px


def normalize_crop(crop: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Robust per-crop intensity scaling: percentiles `low`/`high` of the whole crop -> 0/1.

    Works on any shape; a flat crop becomes all zeros. Values are clipped to [0, 1] (what the
    albumentations intensity transforms expect of float images).
    """
    lo, hi = np.percentile(crop, [low, high])
    scale = hi - lo
    if scale <= 1e-6:
        return np.zeros_like(crop, dtype=np.float32)
    return np.clip((crop - lo) / scale, 0.0, 1.0).astype(np.float32)


def mirror_crop(crop: np.ndarray, view: str) -> np.ndarray:
    """The crop of the left/right-mirrored patient: reverse channels (sagittal) or columns (axial).

    `crop` is `(..., slices, rows, cols)`; returns a new array of the same shape.
    """
    axis = -1 if view == "axial" else -3
    return np.flip(crop, axis=axis).copy()


def _in_plane(direction: np.ndarray, normal: np.ndarray, fallback: Iterable[float]) -> np.ndarray:
    """`direction` projected onto the plane with unit `normal`, normalised (fallback if
    degenerate)."""
    p = direction - (direction @ normal) * normal
    norm = float(np.linalg.norm(p))
    if norm < 1e-3:
        p = np.asarray(list(fallback), dtype=np.float64)
        p = p - (p @ normal) * normal
        norm = float(np.linalg.norm(p))
    return p / norm
