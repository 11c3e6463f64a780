"""Localizer routing and geometry: axial projection over two stacks (one reversed), laterality from
world x, and what happens when a series is missing. The networks here are untrained: these tests
check where the Localizer looks and what it reports, not how well it finds points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.config import LocalizeConfig
from spinegrade.constants import LEVELS, SAGITTAL_T1, TARGETS
from spinegrade.data.tables import load_tables
from spinegrade.dicom import load_study
from spinegrade.localize.dataset import AXIAL_CHANNELS, SAGITTAL_CHANNELS, PreparedStacks
from spinegrade.localize.predict import LOCATION_COLUMNS, Localizer, Point, StackHeat, axial_slices
from spinegrade.localize.train import build_net
from tests.localize.phantom_spine import write_phantom_root

CFG = LocalizeConfig(image_size=64, sigma_px=1.5)


@pytest.fixture(scope="module")
def localizer() -> Localizer:
    torch.manual_seed(0)
    return Localizer(
        build_net(CFG, SAGITTAL_CHANNELS).eval(), build_net(CFG, AXIAL_CHANNELS).eval(), CFG
    )


def _canal(world: tuple[float, float, float]) -> Point:
    return Point(2, 0, 0, 1, 0.0, 0.0, np.array(world), 1.0, "test")


def test_sagittal_points_project_to_the_nearest_slice_of_the_right_axial_stack(
    phantom_root: Path,
) -> None:
    study = load_study(
        phantom_root / "train_images" / "101"
    )  # shift -3: upper z 9..45, lower z -51..1
    hits = axial_slices(
        study,
        {
            "l1_l2": _canal((0.0, 10.0, 37.0)),  # upper stack (index 1), slice 7 -> instance 8
            "l2_l3": _canal(
                (0.0, 10.0, 18.0)
            ),  # upper stack, slice 2 (z 17) -> instance 3, 1 mm away
            "l4_l5": _canal(
                (0.0, 10.0, -23.0)
            ),  # lower stack (index 0, numbered in reverse), slice 7 -> 17
            "l5_s1": _canal((0.0, 10.0, -80.0)),  # 29 mm below the lowest slice
            "l3_l4": "no Sagittal T2/STIR or Sagittal T1 series",
        },
        max_distance_mm=10.0,
    )
    got = {
        lv: (h.stack_index, h.slice_index, h.instance_number, round(h.distance_mm, 6))
        for lv, h in hits.items()
        if not isinstance(h, str)
    }
    assert got == {"l1_l2": (1, 7, 8, 0.0), "l2_l3": (1, 2, 3, 1.0), "l4_l5": (0, 7, 17, 0.0)}
    assert hits["l5_s1"] == "no axial slice within 10 mm of the level (nearest 29.0 mm)"
    assert hits["l3_l4"].startswith("level not found on sagittal images")
    # the pixel of the canal point in the chosen slice: col = (0 - -32) / 2, row = (10 - -22) / 2
    assert (hits["l1_l2"].col, hits["l1_l2"].row) == (16.0, 16.0)


def test_foramina_sides_come_from_world_x_not_instance_order(
    phantom_root: Path, localizer: Localizer
) -> None:
    study = load_study(phantom_root / "train_images" / "101")
    t1 = study.first(SAGITTAL_T1).stacks[0]  # slice k at x = 16 - 4k, instance numbers 9..1
    n = t1.shape[0]
    peak = np.zeros((n, SAGITTAL_CHANNELS))
    peak[8, 5], peak[1, 5], peak[2, 5] = 0.9, 0.7, 0.5  # channel 5: foramen at L1/L2
    heat = StackHeat(1, 0, t1, np.zeros((n, SAGITTAL_CHANNELS, 2)), peak)
    left, right = localizer._foramina(heat, _canal((0.0, 10.0, 37.0)), 0)
    assert (left.slice_index, left.instance_number, left.world[0]) == (1, 8, 12.0)  # x > 0: left
    assert (right.slice_index, right.instance_number, right.world[0]) == (8, 1, -16.0)
    # a canal point off-centre moves the split: at x = 10 only slices 0 and 1 are left of it
    left, right = localizer._foramina(heat, _canal((10.0, 10.0, 37.0)), 0)
    assert left.slice_index == 1 and right.slice_index == 8


@pytest.mark.parametrize("missing", [("Sagittal T1",), ("Sagittal T2/STIR",), ("Axial T2",)])
def test_missing_series_yield_the_other_targets_and_a_reason(
    tmp_path: Path, localizer: Localizer, missing: tuple[str, ...]
) -> None:
    root = write_phantom_root(tmp_path, n=1, missing={101: missing})
    study = load_study(root / "train_images" / "101", load_tables(root).series)
    table = localizer.locate(study)
    assert list(table.columns) == list(LOCATION_COLUMNS)
    assert list(zip(table.condition, table.level)) == list(TARGETS)
    located = table[table.reason == ""]
    assert located[["series_id", "instance_number", "x", "y", "world_x"]].notna().all().all()
    by = {c: table[table.condition == c] for c in table.condition.unique()}
    foramina = pd.concat(
        [by["left_neural_foraminal_narrowing"], by["right_neural_foraminal_narrowing"]]
    )
    subart = pd.concat([by["left_subarticular_stenosis"], by["right_subarticular_stenosis"]])
    canal = by["spinal_canal_stenosis"]
    if missing == ("Sagittal T1",):
        assert (foramina.reason == "no Sagittal T1 series").all()
        assert (
            (canal.reason == "").all()
            and (canal.method == "sagittal_t2").all()
            and (canal.series_id == 2).all()
        )
        assert (subart.reason == "").all() and (subart.series_id == 3).all()
    elif missing == ("Sagittal T2/STIR",):  # learned fallback: the canal channels on Sagittal T1
        assert (canal.reason == "").all() and (canal.method == "sagittal_t1_fallback").all()
        assert (canal.series_id == 1).all()
    else:
        assert (subart.reason == "no Axial T2 series").all() and (canal.reason == "").all()
    if missing != (
        "Sagittal T1",
    ):  # untrained nets: a canal guess on an edge slice leaves a side empty
        assert foramina.reason.isin(
            [
                "",
                "no Sagittal T1 slice left of the canal",
                "no Sagittal T1 slice right of the canal",
            ]
        ).all()
    unplaced_foramina = int((foramina.reason != "").sum()) if missing != ("Sagittal T1",) else 10
    assert len(located) == 25 - unplaced_foramina - 10 * (missing == ("Axial T2",))


def test_canal_slice_and_pixel_come_from_the_highest_peak(
    phantom_root: Path, localizer: Localizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = load_study(phantom_root / "train_images" / "102")
    vol = study.first("Sagittal T2/STIR").stacks[0]  # 9 slices of 48 x 48 pixels

    def fake_heat(net, images):  # type: ignore[no-untyped-def]
        n, k = len(images), net.module.spec.channels  # net: the HeatmapNet as a TorchNet
        xy = np.full((n, k, 2), 4.0)  # heatmap cell (4, 4)
        peak = np.zeros((n, k))
        peak[min(6, n - 1)] = 0.8  # slice 6 wins everywhere
        return xy, peak

    monkeypatch.setattr(localizer, "heat", fake_heat)
    table = localizer.locate(study)
    canal = table[table.condition == "spinal_canal_stenosis"]
    # cell 4 of a 16-cell map over 48 pixels: (4 + 0.5) * 3 - 0.5 = 13
    assert (canal.slice_index == 6).all() and (
        canal.instance_number == vol.instance_numbers[6]
    ).all()
    assert np.allclose(canal[["x", "y"]].to_numpy(dtype=float), 13.0)
    assert np.allclose(canal.world_x, vol.voxel_to_world([[13, 13, 6]])[0, 0])
    assert set(canal.level) == set(LEVELS)


def test_a_shared_memo_prepares_each_stack_once_and_changes_nothing(
    phantom_root: Path, localizer: Localizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spinegrade.localize.dataset as dataset

    study = load_study(phantom_root / "train_images" / "101")
    alone = localizer.locate(study)
    prepared: list[tuple[int, int]] = []  # (volume, slice) of every slice prepared
    real = dataset.prepare_stack

    def spy(vol, size, slices=None, window=None):  # type: ignore[no-untyped-def]
        every = range(vol.shape[0]) if slices is None else slices
        prepared.extend((id(vol), int(i)) for i in every)
        return real(vol, size, slices, window)

    monkeypatch.setattr(dataset, "prepare_stack", spy)
    memo = PreparedStacks()
    first, second = (
        localizer.locate(study, memo),
        localizer.locate(study, memo),
    )  # two folds, one study
    pd.testing.assert_frame_equal(first, alone)
    pd.testing.assert_frame_equal(second, alone)
    # each slice prepared once, although located twice; of the axial stacks only slices in use
    assert len(prepared) == len(set(prepared)) > 0
    axial = {id(v) for _, v in study.axial_stacks()}
    used = [i for v, i in prepared if v in axial]
    assert 0 < len(used) <= 3 * len(LEVELS)
