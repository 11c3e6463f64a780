"""Decoding heatmaps into sub-pixel points: argmax, then a soft-argmax (centroid) around the peak.

The centroid is taken over a `(2r+1)^2` window centred on the arg-max cell (`r = ceil(3 sigma)`), so
a
Gaussian target of width `sigma` decodes back to its centre to a few hundredths of a cell, while
clutter elsewhere in the map cannot pull the point away from the peak.
"""

from __future__ import annotations

import math

import torch


def window_radius(sigma: float) -> int:
    """Half-width of the soft-argmax window for targets of width `sigma` cells."""
    return max(1, math.ceil(3.0 * sigma))


def decode_heatmaps(heat: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Peak position and height of each channel.

    heat: `(..., k, h, w)` non-negative scores (e.g. sigmoid probabilities).
    Returns `xy (..., k, 2)` in cell coordinates (x = column) and `peak (..., k)` (the arg-max
    value).
    """
    *lead, h, w = heat.shape
    flat = heat.reshape(-1, h * w).float()
    peak, idx = flat.max(dim=1)
    py = torch.div(idx, w, rounding_mode="floor")
    px = idx - py * w
    r = window_radius(sigma)
    ys = torch.arange(h, device=heat.device, dtype=torch.float32)
    xs = torch.arange(w, device=heat.device, dtype=torch.float32)
    in_y = ((ys[None, :] - py[:, None].float()).abs() <= r).float()  # (n, h)
    in_x = ((xs[None, :] - px[:, None].float()).abs() <= r).float()  # (n, w)
    weights = flat.reshape(-1, h, w).clamp_min(0) * in_y[:, :, None] * in_x[:, None, :]
    total = weights.sum(dim=(1, 2)).clamp_min(1e-12)
    cx = (weights.sum(dim=1) * xs).sum(dim=1) / total
    cy = (weights.sum(dim=2) * ys).sum(dim=1) / total
    xy = torch.stack([cx, cy], dim=1)
    return xy.reshape(*lead, 2), peak.reshape(*lead)
