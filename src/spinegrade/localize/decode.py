"""Decoding heatmaps into sub-pixel points: argmax, then a soft-argmax (centroid) around the peak.

The centroid is taken over a `(2r+1)^2` window centred on the arg-max cell (`r = ceil(3 sigma)`), so
a Gaussian target of width `sigma` decodes back to its centre to a few hundredths of a cell, while
clutter elsewhere in the map cannot pull the point away from the peak. With a `floor` (a fraction
of the peak), each cell weighs its height above `floor * peak`: the cells above any level of a
Gaussian form a disc around its centre, so that still decodes a Gaussian exactly, and a network's
low, broad background inside the window no longer drags the point towards the window's centre.

`decode_ordered` decodes the five levels of one image together: where a channel's peak sits on
another level's structure (out of order down the image), the in-order choice among each channel's
local maxima of highest total height (`ordered_chain`) moves it to its next-best maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def window_radius(sigma: float) -> int:
    """Half-width of the soft-argmax window for targets of width `sigma` cells."""
    return max(1, math.ceil(3.0 * sigma))


def decode_heatmaps(
    heat: torch.Tensor, sigma: float, floor: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Peak position and height of each channel.

    heat: `(..., k, h, w)` non-negative scores (e.g. sigmoid probabilities); `floor`: the centroid
    weighs each cell's height above `floor * peak` (0: its whole height).
    Returns `xy (..., k, 2)` in cell coordinates (x = column) and `peak (..., k)` (the arg-max
    value).
    """
    *lead, h, w = heat.shape
    flat = heat.reshape(-1, h * w).float()
    peak, idx = flat.max(dim=1)
    centre = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=1).float()
    xy = _centroid(flat.reshape(-1, h, w), centre, window_radius(sigma), floor)
    return xy.reshape(*lead, 2), peak.reshape(*lead)


def peak_candidates(
    heat: torch.Tensor, sigma: float, k: int, min_peak: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's `k` highest local maxima (a cell that is the largest within `ceil(sigma)`
    cells), best first.

    heat: `(n, c, h, w)` non-negative scores. Returns `cells (n, c, k, 2)` (x, y, integer cell
    coordinates) and `score (n, c, k)`; a slot whose maximum is below `min_peak`, or that a channel
    with fewer maxima leaves empty, has score 0.
    """
    n, c, h, w = heat.shape
    r = max(1, math.ceil(sigma))
    flat = heat.float().reshape(n * c, 1, h, w)
    pooled = torch.nn.functional.max_pool2d(flat, 2 * r + 1, stride=1, padding=r)
    maxima = torch.where(flat >= pooled, flat, torch.zeros_like(flat)).reshape(n, c, h * w)
    score, idx = maxima.topk(min(k, h * w), dim=-1)
    score = torch.where(score >= min_peak, score, torch.zeros_like(score))
    cells = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1)
    return cells.float(), score


def ordered_chain(ys: np.ndarray, scores: np.ndarray, min_gap: float) -> np.ndarray:
    """The choice of one candidate per level that keeps the levels in order down the image.

    ys, scores: `(levels, k)` candidates' rows (y) and scores (0: no candidate), levels top to
    bottom. Each level takes one of its candidates or none; any two taken levels `a < b` must have
    `y_b - y_a >= min_gap`. The choice maximises the sum of the taken candidates' scores (dynamic
    programming over levels). Returns `(levels,)` the candidate taken per level, -1 for none.
    """
    levels, k = scores.shape
    best = np.full((levels, k), -np.inf)  # best total of a chain whose lowest taken is (l, j)
    back = np.full((levels, k, 2), -1, dtype=np.int64)
    for lv in range(levels):
        for j in range(k):
            if scores[lv, j] <= 0:
                continue
            best[lv, j], back[lv, j] = scores[lv, j], (-1, -1)
            for above in range(lv):
                fits = (ys[lv, j] - ys[above] >= min_gap) & np.isfinite(best[above])
                if fits.any():
                    i = int(np.argmax(np.where(fits, best[above], -np.inf)))
                    if best[above, i] + scores[lv, j] > best[lv, j]:
                        best[lv, j], back[lv, j] = best[above, i] + scores[lv, j], (above, i)
    chosen = np.full(levels, -1, dtype=np.int64)
    if not np.isfinite(best).any():
        return chosen
    lv, j = np.unravel_index(int(np.argmax(best)), best.shape)
    while lv >= 0:
        chosen[lv] = j
        lv, j = back[lv, j]
    return chosen


def decode_ordered(
    heat: torch.Tensor,
    sigma: float,
    min_gap: float | Sequence[float],
    *,
    k: int = 4,
    min_peak: float = 0.1,
    floor: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`decode_heatmaps` (with its `floor`) with the levels kept in order down the image.

    heat: `(n, levels, h, w)`, channels ordered top (L1/L2) to bottom (L5/S1); `min_gap`: cells,
    one for all or one per sample `(n,)`. Where the channels' own peaks are in order (each at
    least `min_gap` below the one above), the result is :func:`decode_heatmaps`'. Otherwise
    :func:`ordered_chain` picks, from each channel's `k` local maxima of at least `min_peak`, the
    in-order set of highest total score, and a channel moved to another maximum is decoded there
    (soft-argmax over `ceil(sigma)` cells, so that the other maximum does not pull it back); a
    channel the chain leaves out keeps its own peak.
    Returns `xy (n, levels, 2)` in cells and `peak (n, levels)`, the decoded point's height.
    """
    xy, peak = decode_heatmaps(heat, sigma, floor)
    cells, score = peak_candidates(heat, sigma, k, min_peak)
    cells_np, score_np = cells.cpu().numpy(), score.cpu().numpy()
    gaps = np.broadcast_to(np.asarray(min_gap, dtype=np.float64), (heat.shape[0],))
    moved: list[tuple[int, int, int]] = []
    for i in range(heat.shape[0]):
        chosen = ordered_chain(cells_np[i, :, :, 1], score_np[i], float(gaps[i]))
        moved += [(i, lv, int(j)) for lv, j in enumerate(chosen) if j > 0]
    if not moved:
        return xy, peak
    n_idx, lv_idx, j_idx = (torch.tensor(v, device=heat.device) for v in zip(*moved))
    centre = cells[n_idx, lv_idx, j_idx]  # (m, 2)
    maps = heat[n_idx, lv_idx].float()  # (m, h, w)
    xy = xy.clone()
    peak = peak.clone()
    xy[n_idx, lv_idx] = _centroid(maps, centre, max(1, math.ceil(sigma)), floor)
    peak[n_idx, lv_idx] = score[n_idx, lv_idx, j_idx].to(peak.dtype)
    return xy, peak


def decode_grouped(
    heat: torch.Tensor,
    sigma: float,
    min_gap: float | Sequence[float],
    groups: Sequence[int],
    radius: float | Sequence[float],
    *,
    min_peak: float = 0.1,
    floor: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode images in groups that share their points' positions.

    heat: `(n, levels, h, w)`, channels top to bottom; `groups (n,)`: a label per image; `min_gap`,
    `radius`: cells, one for all or one per image (a group uses its first image's). Per group, the
    mean map of its images is decoded with the levels in order (:func:`decode_ordered`), giving
    each level an anchor; each image's level is then decoded (:func:`decode_heatmaps`, with
    `floor`) on its own map with everything farther than `radius` cells (in x or y) from the anchor
    set to 0. Where its own map stays below `min_peak` all over that window, the image takes the
    anchor.
    Returns `xy (n, levels, 2)` in cells and `peak (n, levels)`, the image's own height there.
    """
    n, c, h, w = heat.shape
    labels = np.asarray(groups)
    gaps = np.broadcast_to(np.asarray(min_gap, dtype=np.float64), (n,))
    radii = np.broadcast_to(np.asarray(radius, dtype=np.float64), (n,))
    xy = torch.zeros((n, c, 2), dtype=torch.float32, device=heat.device)
    peak = torch.zeros((n, c), dtype=torch.float32, device=heat.device)
    ys = torch.arange(h, device=heat.device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=heat.device, dtype=torch.float32)[None, :]
    for label in np.unique(labels):
        members = torch.from_numpy(np.flatnonzero(labels == label)).to(heat.device)
        first = int(members[0])
        maps = heat[members].float()  # (m, c, h, w)
        mean = maps.mean(dim=0, keepdim=True)
        anchor, _ = decode_ordered(mean, sigma, float(gaps[first]), floor=floor)
        ax, ay = anchor[0, :, 0, None, None], anchor[0, :, 1, None, None]  # (c, 1, 1)
        near = ((xs - ax).abs() <= radii[first]) & ((ys - ay).abs() <= radii[first])  # (c, h, w)
        own_xy, own_peak = decode_heatmaps(maps * near, sigma, floor)
        faint = own_peak < min_peak
        xy[members] = torch.where(faint[..., None], anchor.expand_as(own_xy), own_xy)
        peak[members] = own_peak
    return xy, peak


def _centroid(maps: torch.Tensor, centre: torch.Tensor, r: int, floor: float = 0.0) -> torch.Tensor:
    """Centroid `(m, 2)` (x, y) of each map `(m, h, w)` over the `(2r+1)^2` window at `centre`,
    each cell weighing its height above `floor` times the window's highest."""
    _, h, w = maps.shape
    ys = torch.arange(h, device=maps.device, dtype=torch.float32)
    xs = torch.arange(w, device=maps.device, dtype=torch.float32)
    in_y = ((ys[None, :] - centre[:, 1:2]).abs() <= r).float()
    in_x = ((xs[None, :] - centre[:, 0:1]).abs() <= r).float()
    window = in_y[:, :, None] * in_x[:, None, :]
    top = (maps.clamp_min(0) * window).amax(dim=(1, 2), keepdim=True)
    weights = (maps - floor * top).clamp_min(0) * window
    total = weights.sum(dim=(1, 2)).clamp_min(1e-12)
    cx = (weights.sum(dim=1) * xs).sum(dim=1) / total
    cy = (weights.sum(dim=2) * ys).sum(dim=1) / total
    return torch.stack([cx, cy], dim=1)
