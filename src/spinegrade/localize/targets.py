"""Gaussian heatmap targets and the one pixel convention of stage 1.

Convention (used by targets, decoding and prediction alike): continuous pixel coordinates put the
*centre* of pixel `i` at `i` (so `x` of the RSNA table is a column index with sub-pixel fraction).
A slice of `rows x cols` pixels is resized to a square network input of `size x size` (bilinear,
`align_corners=False`), whose heatmap has `size / stride` cells per side. Cell `h` covers the input
pixels `[h*stride, (h+1)*stride)`, so both maps are "pixel-centre" affine maps:
`h = (x + 0.5) / scale - 0.5`, with `scale = cols * stride / size` (and `rows` for y).
"""

from __future__ import annotations

import numpy as np


def heatmap_scale(shape: tuple[int, int], size: int, stride: int) -> np.ndarray:
    """Original pixels per heatmap cell `(sx, sy)` for a slice of `shape = (rows, cols)`."""
    rows, cols = shape
    return np.array([cols * stride / size, rows * stride / size], dtype=np.float64)


def to_heatmap(xy: np.ndarray, shape: tuple[int, int], size: int, stride: int) -> np.ndarray:
    """Original pixel `(n, 2)` (x=col, y=row) -> heatmap cell coordinates `(n, 2)`."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) / heatmap_scale(shape, size, stride) - 0.5


def from_heatmap(hxy: np.ndarray, shape: tuple[int, int], size: int, stride: int) -> np.ndarray:
    """Heatmap cell coordinates `(n, 2)` -> original pixel `(n, 2)` (inverse of
    :func:`to_heatmap`)."""
    return (np.asarray(hxy, dtype=np.float64) + 0.5) * heatmap_scale(shape, size, stride) - 0.5


def gaussian_heatmaps(
    centers: np.ndarray, amplitudes: np.ndarray, hw: tuple[int, int], sigma: float
) -> np.ndarray:
    """One Gaussian per channel: `centers (k, 2)` cell (x, y), `amplitudes (k,)` -> `(k, h, w)`
    float32.

    A channel with amplitude 0 (or a NaN centre) is all zeros: a negative slice, or no target.
    """
    h, w = hw
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    amps = np.asarray(amplitudes, dtype=np.float64).reshape(-1)
    ys = np.arange(h, dtype=np.float64)[None, :, None]
    xs = np.arange(w, dtype=np.float64)[None, None, :]
    cx, cy = centers[:, 0, None, None], centers[:, 1, None, None]
    with np.errstate(invalid="ignore"):
        maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * sigma**2)) * amps[:, None, None]
    return np.nan_to_num(maps, nan=0.0).astype(np.float32)


def slice_amplitude(distance_mm: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Target peak height of a slice at `distance_mm` from the labelled point's plane: a 1D
    Gaussian.

    This is what lets the per-slice model pick the slice: the labelled slice has the highest peak.
    """
    d = np.asarray(distance_mm, dtype=np.float64)
    return np.exp(-(d**2) / (2.0 * sigma_mm**2))
