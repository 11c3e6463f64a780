"""Crop slots: one per target by default; `both` gives a target two, mirrored and fused as one."""

from __future__ import annotations

import numpy as np

from spinegrade.config import ViewsConfig
from spinegrade.constants import TARGETS
from spinegrade.grade.augment import mirror_sample
from spinegrade.grade.views import CropSlots, mirror_index

BOTH_FORAMINAL = ViewsConfig(foraminal="both")


def test_the_default_views_give_one_slot_per_target_in_order() -> None:
    slots = CropSlots.of()
    assert len(slots) == 25 and slots.one_per_target and not slots.fused
    assert slots.view == tuple(
        "axial" if c.endswith("subarticular_stenosis") else "sagittal" for c, _ in TARGETS
    )
    assert np.array_equal(slots.mirror_index(), mirror_index())
    valid = np.arange(25) % 2 == 0
    assert np.array_equal(slots.target_valid(valid), valid)


def test_both_views_give_two_slots_per_target_of_the_group() -> None:
    slots = CropSlots.of(TARGETS, ViewsConfig(spinal="both", subarticular="sagittal"))
    assert len(slots) == 30 and slots.fused
    assert slots.target[:4] == (0, 0, 1, 1) and slots.view[:4] == ("sagittal", "axial") * 2
    assert slots.view[-1] == "sagittal"  # subarticular: sagittal only
    assert slots.assignment().sum(axis=0).tolist() == [2.0] * 5 + [1.0] * 20
    valid = np.zeros((2, 30), dtype=bool)
    valid[0, 1] = True  # study 0: only the L1/L2 canal's axial crop
    assert slots.target_valid(valid).tolist() == [[True] + [False] * 24, [False] * 25]


def test_the_mirror_swaps_each_view_with_the_same_view_of_the_partner() -> None:
    slots = CropSlots.of(TARGETS, BOTH_FORAMINAL)
    assert len(slots) == 35
    mirror = slots.mirror_index()
    assert np.array_equal(mirror[mirror], np.arange(35))
    left = TARGETS.index(("left_neural_foraminal_narrowing", "l3_l4"))
    right = TARGETS.index(("right_neural_foraminal_narrowing", "l3_l4"))
    for view in ("sagittal", "axial"):
        j = [k for k, (t, v) in enumerate(zip(slots.target, slots.view)) if (t, v) == (left, view)]
        partner = mirror[j[0]]
        assert (slots.target[partner], slots.view[partner]) == (right, view)

    rng = np.random.default_rng(0)
    crops = rng.random((35, 3, 4, 4)).astype(np.float32)
    valid = np.ones(35, dtype=bool)
    labels = np.arange(25)
    views = list(slots.view)
    m_crops, m_valid, m_labels, m_views = mirror_sample(crops, valid, labels, views, slots=slots)
    assert m_labels[right] == labels[left] and m_views == views
    sag_l, ax_l = (k for k, t in enumerate(slots.target) if t == left)
    sag_r, ax_r = (k for k, t in enumerate(slots.target) if t == right)
    assert np.array_equal(m_crops[sag_r], crops[sag_l][::-1])  # sagittal: channels reversed
    assert np.array_equal(m_crops[ax_r], crops[ax_l][:, :, ::-1])  # axial: columns flipped
    back = mirror_sample(m_crops, m_valid, m_labels, m_views, slots=slots)
    assert np.array_equal(back[0], crops) and np.array_equal(back[2], labels)
