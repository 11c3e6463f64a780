"""The patient left/right mirror swaps left and right targets and flips each crop for its view."""

from __future__ import annotations

import numpy as np

from spinegrade.constants import TARGETS
from spinegrade.grade.augment import (
    MIRROR_INDEX,
    AugmentParams,
    apply_intensity,
    intensity_transform,
    mirror_sample,
    random_jitter,
)


def _slot(condition: str, level: str) -> int:
    return TARGETS.index((condition, level))


def test_mirror_swaps_left_and_right_targets_and_flips_crops() -> None:
    rng = np.random.default_rng(0)
    crops = rng.random((25, 3, 8, 8)).astype(np.float32)
    labels = np.arange(25) % 3
    valid = np.ones(25, dtype=bool)
    valid[_slot("left_subarticular_stenosis", "l5_s1")] = False
    views = ["axial" if c.endswith("subarticular_stenosis") else "sagittal" for c, _ in TARGETS]

    m_crops, m_valid, m_labels, m_views = mirror_sample(crops, valid, labels, views)

    left_ax, right_ax = (
        _slot("left_subarticular_stenosis", "l4_l5"),
        _slot("right_subarticular_stenosis", "l4_l5"),
    )
    assert m_labels[right_ax] == labels[left_ax] and m_labels[left_ax] == labels[right_ax]
    assert np.array_equal(m_crops[right_ax], crops[left_ax][:, :, ::-1])  # axial: columns flipped
    left_f, right_f = (
        _slot("left_neural_foraminal_narrowing", "l2_l3"),
        _slot("right_neural_foraminal_narrowing", "l2_l3"),
    )
    assert m_labels[right_f] == labels[left_f]
    assert np.array_equal(m_crops[right_f], crops[left_f][::-1])  # sagittal: channel order reversed
    spinal = _slot("spinal_canal_stenosis", "l3_l4")
    assert m_labels[spinal] == labels[spinal]  # the canal stays, mirrored through its channels
    assert np.array_equal(m_crops[spinal], crops[spinal][::-1])
    assert not m_valid[_slot("right_subarticular_stenosis", "l5_s1")] and m_valid.sum() == 24
    assert m_views == views
    # mirroring twice is the identity
    back = mirror_sample(m_crops, m_valid, m_labels, m_views)
    assert np.array_equal(back[0], crops) and np.array_equal(back[2], labels)
    assert sorted(MIRROR_INDEX) == list(range(25)) and np.array_equal(
        MIRROR_INDEX[MIRROR_INDEX], np.arange(25)
    )


def test_jitter_and_intensity_stay_in_range() -> None:
    rng = np.random.default_rng(1)
    params = AugmentParams(
        coord_jitter_mm=2.0, slice_shift=2, angle_deg=10, scale=0.1, intensity_p=1.0
    )
    jitters = [random_jitter(rng, params) for _ in range(200)]
    assert {j.slice_shift for j in jitters} == {-2, -1, 0, 1, 2}
    assert all(abs(j.angle_deg) <= 10 and 0.9 <= j.scale <= 1.1 for j in jitters)
    assert 1.5 < np.std([j.shift_mm[0] for j in jitters]) < 2.5
    crop = rng.random((5, 16, 16)).astype(np.float32)
    out = apply_intensity(intensity_transform(1.0), crop, seed=3)
    assert out.shape == crop.shape and out.dtype == np.float32 and not np.array_equal(out, crop)
    assert np.array_equal(out, apply_intensity(intensity_transform(1.0), crop, seed=3))  # seeded


def test_the_mirror_of_a_subset_of_targets_swaps_within_it() -> None:
    from spinegrade.grade.augment import mirror_index

    axial = [(c, lv) for c, lv in TARGETS if c.endswith("subarticular_stenosis") or "spinal" in c]
    index = mirror_index(axial)
    for i, (c, lv) in enumerate(axial):
        partner = axial[index[i]]
        assert partner[1] == lv
        assert partner[0] == c.replace("left", "@").replace("right", "left").replace("@", "right")
    assert np.array_equal(mirror_index(), MIRROR_INDEX)
    crops = np.arange(15 * 2).reshape(15, 1, 1, 2).astype(np.float32)
    m, _, labels, _ = mirror_sample(crops, np.ones(15, bool), np.arange(15), ["axial"] * 15, axial)
    assert labels.tolist() == index.tolist()  # slot t now holds what its partner held
    assert np.array_equal(m[0], crops[0, :, :, ::-1])  # the canal's own crop, flipped
    one_side = [t for t in TARGETS if t[0] == "left_subarticular_stenosis"]
    try:
        mirror_index(one_side)
    except ValueError as exc:
        assert "both sides" in str(exc)
    else:
        raise AssertionError("a one-sided target list has no mirror")
