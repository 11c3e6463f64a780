"""Training samples: world-point projection into each sagittal series, targets, and the flip
swap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinegrade.data.tables import load_tables
from spinegrade.dicom import load_study
from spinegrade.localize.dataset import (
    HeatmapDataset,
    SliceSample,
    axial_samples,
    sagittal_samples,
    world_points,
)
from spinegrade.localize.decode import decode_heatmaps
from spinegrade.localize.targets import to_heatmap


def _flip_dataset() -> HeatmapDataset:
    stack = np.zeros((3, 32, 32), np.float16)
    stack[1, 10, 20] = 1.0
    sample = SliceSample(
        0,
        1,
        np.array([[20.0, 10.0], [8.0, 12.0]]),
        np.array([1.0, 0.5]),
        np.array([1.0, 0.0], np.float32),
    )
    return HeatmapDataset(
        [stack], [sample], size=32, stride=2, sigma=1.0, augment=True, flip_pairs=((0, 1),)
    )


def test_flip_mirrors_the_image_and_swaps_left_and_right() -> None:
    ds = _flip_dataset()
    ds.transform = None  # geometric/intensity augmentation off: only the flip
    torch.manual_seed(0)
    items = [ds[0] for _ in range(20)]
    flipped = [it for it in items if it["image"][1, 10, 31 - 20] == 1.0]
    kept = [it for it in items if it["image"][1, 10, 20] == 1.0]
    assert flipped and kept and len(flipped) + len(kept) == 20  # each draw is one or the other
    assert all(it["mask"].tolist() == [0.0, 1.0] for it in flipped)  # masks swap with channels
    assert all(it["mask"].tolist() == [1.0, 0.0] for it in kept)
    xy, peak = decode_heatmaps(flipped[0]["target"], 1.0)
    expected = to_heatmap(np.array([[31 - 8.0, 12.0], [31 - 20.0, 10.0]]), (32, 32), 32, 2)
    assert np.allclose(xy.numpy(), expected, atol=0.1)  # channel 0 (left) holds the old right
    # peaks are the amplitudes (0.5, 1) times the same off-grid attenuation (both 0.25 cell off)
    assert peak[0] / peak[1] == pytest.approx(0.5) and peak[1] > 0.9


def test_augmented_draws_repeat_under_the_same_seed() -> None:
    def draws(seed: int) -> list[torch.Tensor]:
        ds = _flip_dataset()
        torch.manual_seed(seed)
        return [ds[0]["image"] for _ in range(4)]

    first, again, other = draws(1), draws(1), draws(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert not torch.equal(first[0], first[1])  # successive draws of one item differ


def test_points_are_projected_into_each_sagittal_series(phantom_root: Path) -> None:
    tables = load_tables(phantom_root)
    study = load_study(phantom_root / "train_images" / "102", tables.series)  # shift 0
    pts = world_points(study, tables.coordinates[tables.coordinates.study_id == 102])
    assert len(pts) == 25
    stacks, samples = sagittal_samples(study, pts, size=48, slice_sigma=0.6)
    assert len(stacks) == 2  # T1 and T2 (series order 1, 2)
    t1 = {s.index: s for s in samples if s.stack == 0}
    t2 = {s.index: s for s in samples if s.stack == 1}
    # T2 supervises only the canal channels; T1 the canal (projected) and the foramina
    assert all(s.mask.tolist() == [1.0] * 5 + [0.0] * 5 for s in t2.values())
    assert all(s.mask.tolist() == [1.0] * 10 for s in t1.values())
    # the canal (x = 0) lies on slice 4 of both stacks (x = 16 - 4k): amplitude 1 there
    assert t2[4].amps[:5] == pytest.approx(1.0) and t1[4].amps[:5] == pytest.approx(1.0)
    # the left foramen is labelled on slice 0 (instance 9): peak 1 there, exp(-1 / (2 * 0.6^2)) next
    # door
    assert t1[0].amps[5] == pytest.approx(1.0) and t1[1].amps[5] == pytest.approx(np.exp(-1 / 0.72))
    # L1/L2 canal at (0, 10, 40): column (10 + 38) / 2 = 24, row (48 - 40) / 2 = 4 -> input pixels
    assert t2[4].points[0] == pytest.approx(to_heatmap(np.array([[24.0, 4.0]]), (48, 48), 48, 1)[0])
    ax_stacks, ax = axial_samples(study, pts, size=32, slice_sigma=0.6)
    assert len(ax_stacks) == 2 and len(ax) == 5  # one labelled slice per level, over both stacks
    assert all(s.amps.tolist() == [1.0, 1.0] for s in ax)
    assert all(s.points[0, 0] > s.points[1, 0] for s in ax)  # left (larger LPS x) at larger column
