"""Turn a phantom seen through a series' geometry into stored pixels (uint16), like an MR scanner.

Signal = tissue contrast (T1 / T2 / STIR table) x smooth texture, averaged over a few planes across
the slice thickness (partial volume), times a smooth multiplicative bias field (coil sensitivity),
plus Rician noise (magnitude of a complex Gaussian), scaled to a random maximum and rounded.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from spinegrade.data.synthetic.phantom import CONTRASTS, Phantom
from spinegrade.data.synthetic.scanner import SeriesPlan, Stack

#: Finest acquisition pixel (mm): finer stored images are interpolated from a grid this coarse.
ACQ_MM = 1.2


def render_stack(
    ph: Phantom,
    stack: Stack,
    contrast: str,
    rng: np.random.Generator,
    gain: float,
    noise: float,
    bias: np.ndarray,
    planes: int = 2,
    acq_mm: float = ACQ_MM,
) -> np.ndarray:
    """Pixels (slices, rows, cols) uint16 of one stack.

    `gain`: stored value of signal 1.0; `noise`: noise sigma relative to signal 1.0; `bias` (4,):
    coefficients of the field 1 + b . (x, y, z) / 200 mm + b3 * |p|^2 / 200^2 (world mm); `planes`
    sample planes spread over the slice thickness (partial-volume averaging). Like a scanner that
    reconstructs a larger matrix than it acquired, images finer than `acq_mm` are rendered on a
    coarser acquisition grid and interpolated (bilinear) to the stored one; noise is added after.
    `acq_mm=0` renders every stored pixel (the plain, slower way; see benchmarks/bench_synth.py).
    """
    values = CONTRASTS[contrast]
    out = np.empty((len(stack.positions), stack.rows, stack.cols), dtype=np.uint16)
    offsets = (np.arange(planes) - (planes - 1) / 2) / planes * stack.thickness
    f = max(1.0, acq_mm / max(stack.spacing))  # stored pixel i sits at acquisition coordinate i / f
    acq_rows, acq_cols = (
        int(np.ceil((stack.rows - 1) / f)) + 1,
        int(np.ceil((stack.cols - 1) / f)) + 1,
    )
    edge = 0.6 * max(stack.spacing) * f
    grid = np.mgrid[0 : stack.rows, 0 : stack.cols].astype(np.float32) / np.float32(f)
    for k in range(len(stack.positions)):
        pts = _acquisition_points(stack, k, f, acq_rows, acq_cols)
        signal = np.zeros(len(pts), dtype=np.float32)
        for off in offsets:
            signal += ph.paint(pts + off * stack.normal, values, edge_mm=edge, texture=False)
        signal *= ph.texture_at(pts) / planes
        rel = (pts - ph.disc_centres["l3_l4"]) / 200.0
        field = 1.0 + rel @ bias[:3] + bias[3] * (rel**2).sum(1)
        signal *= np.clip(field, 0.4, 1.6).astype(np.float32)
        image = signal.reshape(acq_rows, acq_cols)
        if f > 1.0:
            image = map_coordinates(image, grid, order=1, mode="nearest")
        re = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
        im = rng.normal(0.0, noise, image.shape).astype(np.float32)
        out[k] = np.clip(np.rint(np.sqrt(re * re + im * im) * gain), 0, 65535).astype(np.uint16)
    return out


def _acquisition_points(stack: Stack, k: int, f: float, rows: int, cols: int) -> np.ndarray:
    """World positions (rows * cols, 3) of the acquisition pixels (f times the stored spacing)."""
    dy, dx = stack.spacing
    i = (np.arange(cols) * f)[None, :, None] * dx * stack.row_dir
    j = (np.arange(rows) * f)[:, None, None] * dy * stack.col_dir
    return (stack.positions[k] + i + j).reshape(-1, 3)


def render_series(
    ph: Phantom, plan: SeriesPlan, rng: np.random.Generator, planes: int = 2, acq_mm: float = ACQ_MM
) -> list[np.ndarray]:
    """Pixels of every stack of `plan` (same gain, noise and bias field within a series)."""
    gain = rng.uniform(600.0, 3000.0)
    noise = rng.uniform(0.015, 0.045)
    bias = np.concatenate([rng.normal(0.0, 0.12, 3), [rng.normal(-0.15, 0.1)]])
    return [
        render_stack(ph, st, plan.contrast, rng, gain, noise, bias, planes, acq_mm)
        for st in plan.stacks
    ]
