"""Gaussian targets and their decoding round-trip; the pixel <-> heatmap convention."""

from __future__ import annotations

import numpy as np
import torch

from spinegrade.localize.decode import (
    decode_grouped,
    decode_heatmaps,
    decode_ordered,
    ordered_chain,
)
from spinegrade.localize.targets import (
    from_heatmap,
    gaussian_heatmaps,
    slice_amplitude,
    to_heatmap,
)


def test_gaussian_at_subpixel_position_decodes_within_a_tenth_of_a_cell() -> None:
    rng = np.random.default_rng(0)
    centers = rng.uniform(6, 26, size=(50, 2))
    for sigma in (1.0, 2.0):
        maps = gaussian_heatmaps(centers, np.ones(50), (32, 32), sigma)
        xy, peak = decode_heatmaps(torch.from_numpy(maps), sigma)
        assert np.abs(xy.numpy() - centers).max() < 0.1
        assert torch.all(peak > 0.8)


def test_peak_is_the_amplitude_and_zero_amplitude_is_empty() -> None:
    maps = gaussian_heatmaps(
        np.array([[10.0, 12.0], [5.0, 5.0], [np.nan, np.nan]]),
        np.array([0.5, 0.0, 1.0]),
        (24, 24),
        2.0,
    )
    assert maps[0].max() == np.float32(0.5) and maps[0][12, 10] == np.float32(0.5)
    assert not maps[1].any() and not maps[2].any()


def test_a_floor_decodes_a_gaussian_on_a_background_where_the_plain_centroid_is_dragged() -> None:
    # a sigma-2 Gaussian at (10.4, 14.3) on a flat 0.05 background
    gauss = gaussian_heatmaps(np.array([[10.4, 14.3]]), np.ones(1), (24, 24), 2.0)[0]
    heat = torch.from_numpy(0.05 + 0.95 * gauss)[None]
    plain, _ = decode_heatmaps(heat, 2.0)
    floored, peak = decode_heatmaps(heat, 2.0, floor=0.5)
    # the background fills the 13 x 13 window around the arg-max cell (10, 14) evenly, so it
    # pulls the plain centroid towards that cell (by 0.11 and 0.08 cells here)
    assert np.all(np.abs(plain.numpy()[0] - [10.4, 14.3]) > 0.05)
    assert np.allclose(floored.numpy()[0], [10.4, 14.3], atol=0.02)
    assert np.isclose(float(peak[0]), float(heat.max()))


def test_decoding_ignores_clutter_outside_the_window() -> None:
    maps = gaussian_heatmaps(
        np.array([[8.3, 20.6], [25.0, 4.0]]), np.array([1.0, 0.6]), (32, 32), 1.5
    )
    heat = torch.from_numpy(maps.max(axis=0, keepdims=True))  # one channel, two blobs
    xy, peak = decode_heatmaps(heat, 1.5)
    assert np.allclose(xy.numpy()[0], [8.3, 20.6], atol=0.1)
    assert float(peak[0]) > 0.9


def test_pixel_heatmap_maps_are_inverse_and_pixel_centred() -> None:
    xy = np.array([[0.0, 0.0], [137.25, 12.5], [255.0, 99.0]])
    shape, size, stride = (100, 256), 128, 4  # rows, cols: non-square slice
    h = to_heatmap(xy, shape, size, stride)
    assert np.allclose(from_heatmap(h, shape, size, stride), xy)
    # a cell covers 8 columns (256/128*4) and 3.125 rows: the centre of cell 0 is x = 3.5, y =
    # 1.0625
    assert np.allclose(from_heatmap(np.zeros((1, 2)), shape, size, stride), [[3.5, 1.0625]])


def test_slice_amplitude_peaks_on_the_labelled_plane() -> None:
    amp = slice_amplitude(np.array([0.0, 3.0, -3.0, 9.0]), sigma_mm=3.0)
    assert amp[0] == 1.0 and np.isclose(amp[1], np.exp(-0.5)) and amp[1] == amp[2] and amp[3] < 0.02


def test_ordered_chain_takes_the_in_order_set_of_highest_total() -> None:
    # three levels, two candidates each (rows y, scores); gap 3
    ys = np.array([[10.0, 30.0], [10.0, 20.0], [30.0, 0.0]])
    scores = np.array([[0.9, 0.2], [0.8, 0.5], [0.7, 0.0]])
    # the tops (10, 10, 30) are out of order; in order: 0.9 + 0.5 + 0.7 (y 10, 20, 30) = 2.1
    # beats 0.2 + 0.8 ... (y 30 then 10: not in order) and 0.9 + 0.7 with level 1 left out (1.6)
    assert ordered_chain(ys, scores, 3.0).tolist() == [0, 1, 0]
    # a gap of 15 leaves no room for level 1 between 10 and 30: the chain leaves it out
    assert ordered_chain(ys, scores, 15.0).tolist() == [0, -1, 0]
    # no candidate at all: nothing taken
    assert ordered_chain(ys, np.zeros_like(scores), 3.0).tolist() == [-1, -1, -1]


def test_decode_ordered_moves_a_level_off_its_neighbours_foramen() -> None:
    # channel 1 (the middle level) peaks on channel 0's blob (y 8), with a weaker blob at y 20
    blobs = np.array([[12.0, 8.0], [12.4, 8.0], [13.0, 32.0], [12.6, 20.3]])
    maps = gaussian_heatmaps(blobs, np.array([1.0, 0.9, 1.0, 0.6]), (40, 24), 1.5)
    heat = torch.from_numpy(np.stack([maps[0], np.maximum(maps[1], maps[3]), maps[2]])[None])
    plain, _ = decode_heatmaps(heat, 1.5)
    assert np.allclose(plain.numpy()[0, 1], [12.4, 8.0], atol=0.1)  # the swap
    xy, peak = decode_ordered(heat, 1.5, 3.0)
    assert np.allclose(xy.numpy()[0, 1], [12.6, 20.3], atol=0.15)
    assert np.isclose(float(peak[0, 1]), 0.6, atol=0.05)
    # the levels in order are decoded exactly as decode_heatmaps does
    assert torch.equal(xy[0, [0, 2]], plain[0, [0, 2]])
    in_order = heat[:, [0, 2]]
    assert torch.equal(decode_ordered(in_order, 1.5, 3.0)[0], decode_heatmaps(in_order, 1.5)[0])


def test_decode_grouped_finds_each_level_on_the_groups_mean_map() -> None:
    def image(blobs: list[list[tuple[float, float, float]]]) -> np.ndarray:
        """Channels `(2, 48, 24)`, each the max of its (x, y, height) blobs."""
        channels = []
        for ch in blobs:
            xy, height = np.array([b[:2] for b in ch]), np.array([b[2] for b in ch])
            channels.append(gaussian_heatmaps(xy, height, (48, 24), 1.5).max(axis=0))
        return np.stack(channels)

    right = image([[(12.0, 8.0, 1.0)], [(12.5, 24.3, 1.0)]])
    shifted = image([[(13.0, 9.0, 0.8)], [(13.2, 25.0, 0.8)]])
    # one level down: level 0 peaks on level 1's foramen (a faint blob on its own), level 1 on
    # the foramen below, with nothing near level 1's own
    miscounted = image([[(12.0, 24.0, 0.9), (11.6, 8.4, 0.3)], [(12.0, 40.0, 0.9)]])
    heat = torch.from_numpy(np.stack([right, shifted, miscounted, miscounted]))
    xy, peak = decode_grouped(heat, 1.5, 3.0, [0, 0, 0, 1], 4.0)
    plain, plain_peak = decode_heatmaps(heat, 1.5)
    # each image near its own blobs where its group agrees: as decode_heatmaps
    assert torch.allclose(xy[:2], plain[:2], atol=0.05)
    assert torch.allclose(peak[:2], plain_peak[:2])
    # the miscounted image of group 0: level 0 at its own faint blob, level 1 at the group's point
    assert np.allclose(xy.numpy()[2, 0], [11.6, 8.4], atol=0.15)
    # its height there: the blob's 0.3 at the cell (12, 8), 0.4 cells off its centre each way
    assert np.isclose(float(peak[2, 0]), 0.3 * np.exp(-0.32 / (2 * 1.5**2)), atol=1e-5)
    mean_level_1, _ = decode_heatmaps(heat[:3, 1:].mean(dim=0, keepdim=True), 1.5)
    assert torch.allclose(xy[2, 1], mean_level_1[0, 0]) and float(peak[2, 1]) < 1e-6
    assert 24.0 < float(xy[2, 1, 1]) < 25.0
    # alone in group 1, the same image decodes at its own (in-order) peaks
    assert torch.allclose(xy[3], plain[3], atol=0.05)
