"""Class-activation maps as small PNGs: a target's crop in grey beside the crop with its map.

A :class:`CamImage` is plain numpy (the worker processes that draw it import no torch): the
crop's centre channel and the map, both `(P, P)` in [0, 1]. :func:`cam_png` colours the map with a
matplotlib colormap on the arrays and blends it over the crop where the map is high (the crop
shows through where it is low), enlarges both halves to about `SIDE_PX` pixels without smoothing,
marks the graded point (the crop's centre) with a small cross and writes the PNG with PIL: about
1 ms per target, where a matplotlib figure took ~40 ms.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from spinegrade.io import write_with

CMAP = "jet"
SIDE_PX = 96  #: each half is enlarged by a whole factor to at least about this many pixels
MAX_ALPHA = 0.6  #: opacity of the colour where the map is 1
GAP_PX = 4


@dataclass(frozen=True)
class CamImage:
    """One target's crop `image (P, P)` (its centre channel) and map `heat (P, P)`, both in
    [0, 1]; `label` names the severity explained, `peak_mm` the map's maximum's distance from
    the point."""

    image: np.ndarray
    heat: np.ndarray
    label: str
    peak_mm: float


def cam_rgb(cam: CamImage) -> np.ndarray:
    """`(S, 2S + GAP_PX, 3)` uint8: the grey crop, a white gap, the crop blended with the map."""
    grey = np.repeat(np.clip(cam.image, 0, 1)[..., None], 3, axis=2)
    heat = np.clip(np.nan_to_num(cam.heat), 0, 1)
    colour = matplotlib.colormaps[CMAP](heat)[..., :3]
    alpha = MAX_ALPHA * heat[..., None]
    blended = (1 - alpha) * grey + alpha * colour
    scale = max(1, -(-SIDE_PX // cam.image.shape[0]))
    halves = [_centre_cross(_enlarge(h, scale), scale) for h in (grey, blended)]
    gap = np.ones((halves[0].shape[0], GAP_PX, 3))
    return np.round(np.concatenate([halves[0], gap, halves[1]], axis=1) * 255).astype(np.uint8)


def cam_png(cam: CamImage) -> bytes:
    """:func:`cam_rgb` as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(cam_rgb(cam)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def save_cam(cam: CamImage, path: str | Path) -> Path:
    """Write :func:`cam_png` to `path` atomically."""
    data = cam_png(cam)
    return write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def _enlarge(rgb: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def _centre_cross(rgb: np.ndarray, scale: int) -> np.ndarray:
    """A small white cross with a dark outline at the image's centre (the graded point)."""
    out = rgb.copy()
    side = out.shape[0]
    c, arm = side // 2, max(3, scale)
    for colour, width in (((0.0, 0.0, 0.0), 1), ((1.0, 1.0, 1.0), 0)):
        out[c - width : c + width + 1, c - arm - width : c + arm + width + 1] = colour
        out[c - arm - width : c + arm + width + 1, c - width : c + width + 1] = colour
    return out


__all__ = ["CamImage", "cam_png", "cam_rgb", "save_cam"]
