"""Weighted draws: the weights follow the metric's excess weight of each study's labels, draws
follow the weights, and under torchrun the ranks split one draw into equal, disjoint shares."""

from __future__ import annotations

import numpy as np
import pytest

from spinegrade.training.sampling import WeightedDistributedSampler, excess_weights


def test_excess_weights_add_factor_per_moderate_and_three_per_severe() -> None:
    labels = [
        np.array([0, 0, -1, 0]),  # healthy (a blank counts nothing)
        np.array([1, 0, 0, -1]),  # one moderate
        np.array([2, 1, 0, 0]),  # one severe, one moderate
    ]
    np.testing.assert_allclose(excess_weights(labels, 0.5), [1.0, 1.5, 3.0])
    np.testing.assert_allclose(excess_weights(labels, 0.0), [1.0, 1.0, 1.0])


def test_draw_frequencies_follow_the_weights() -> None:
    weights = np.array([1.0, 1.0, 2.0, 4.0, 8.0])
    sampler = WeightedDistributedSampler(weights, seed=3, rank=0, world_size=1)
    counts = np.zeros(len(weights))
    for epoch in range(4000):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == len(weights)
        counts += np.bincount(drawn, minlength=len(weights))
    expected = weights / weights.sum() * counts.sum()  # 20,000 draws: 1,250 ... 10,000
    # binomial sd is at most 56 draws here; 4 sd is a 0.002% chance per cell
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected)), (counts, expected)


def test_ranks_split_one_draw_into_equal_disjoint_shares() -> None:
    weights = np.r_[np.ones(7), 10 * np.ones(4)]  # 11 samples over 3 ranks: 4 each
    ranks = [WeightedDistributedSampler(weights, seed=0, rank=r, world_size=3) for r in range(3)]
    draws = []
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        shares = [list(s) for s in ranks]
        assert [len(share) for share in shares] == [4, 4, 4] == [len(s) for s in ranks]
        whole = ranks[1].draw().tolist()  # every rank makes the same draw of 12
        assert whole == ranks[2].draw().tolist() and len(whole) == 12
        assert [whole[r::3] for r in range(3)] == shares  # each rank takes its positions of it
        draws.append(whole)
    assert draws[0] != draws[1]  # each epoch draws anew


def test_bad_weights_are_refused() -> None:
    for bad in ([], [1.0, 0.0], [1.0, -2.0], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="positive"):
            WeightedDistributedSampler(bad)
