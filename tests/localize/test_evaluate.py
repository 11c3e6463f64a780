"""Report figures and the mean-position baseline on hand-made cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.data.tables import load_tables
from spinegrade.dicom import load_study
from spinegrade.localize.baseline import MeanPositionBaseline
from spinegrade.localize.dataset import world_points
from spinegrade.localize.evaluate import point_errors, summarize

CANAL, LEFT_F, RIGHT_F = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
)


def _truth(rows: list[tuple[str, str, tuple[float, float, float]]]) -> pd.DataFrame:
    """True points of study 1 on sagittal slices: normal +x, 4 mm apart."""
    return pd.DataFrame(
        [
            {
                "study_id": 1,
                "condition": c,
                "level": lv,
                "wx": w[0],
                "wy": w[1],
                "wz": w[2],
                "nx": 1.0,
                "ny": 0.0,
                "nz": 0.0,
                "dz": 4.0,
            }
            for c, lv, w in rows
        ]
    )


def _pred(rows: list[tuple[str, str, tuple[float, float, float] | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "study_id": 1,
                "condition": c,
                "level": lv,
                "world_x": np.nan if w is None else w[0],
                "world_y": np.nan if w is None else w[1],
                "world_z": np.nan if w is None else w[2],
                "reason": "why not" if w is None else "",
            }
            for c, lv, w in rows
        ]
    )


def test_errors_levels_and_swaps_on_a_hand_made_case() -> None:
    truth = _truth(
        [
            (CANAL, "l1_l2", (0, 0, 0)),
            (CANAL, "l2_l3", (0, 0, -30)),
            (LEFT_F, "l1_l2", (14, 5, 0)),
            (RIGHT_F, "l1_l2", (-14, 5, 0)),
        ]
    )
    pred = _pred(
        [
            (CANAL, "l1_l2", (4, 3, 0)),  # 4 mm along the normal (1 slice), 3 mm in plane
            (CANAL, "l2_l3", (0, 0, -7)),  # 23 mm above l2_l3, 7 below l1_l2: wrong level
            (LEFT_F, "l1_l2", (-13, 5, 0)),  # lands on the right foramen: a swap
            (RIGHT_F, "l1_l2", None),  # not located
        ]
    )
    e = point_errors(pred, truth).set_index(["condition", "level"])
    assert e.loc[(CANAL, "l1_l2"), "inplane_mm"] == pytest.approx(3.0)
    assert e.loc[(CANAL, "l1_l2"), "slice_error"] == 1
    assert e.loc[(CANAL, "l2_l3"), "inplane_mm"] == pytest.approx(23.0)
    assert e.loc[(CANAL, "l2_l3"), "slice_error"] == 0
    assert bool(e.loc[(CANAL, "l1_l2"), "level_ok"]) and not bool(
        e.loc[(CANAL, "l2_l3"), "level_ok"]
    )
    assert bool(e.loc[(LEFT_F, "l1_l2"), "swap"]) and not bool(e.loc[(CANAL, "l1_l2"), "swap"])
    assert not bool(e.loc[(RIGHT_F, "l1_l2"), "located"])

    s = summarize(point_errors(pred, truth))
    spinal, foraminal = s["groups"]["spinal"], s["groups"]["foraminal"]
    assert spinal["points"] == 2 and spinal["missed"] == 0
    assert spinal["inplane_mm_median"] == pytest.approx(13.0)
    assert spinal["inplane_mm_p90"] == pytest.approx(3.0 + 0.9 * 20.0)
    assert spinal["slice_exact"] == 0.5 and spinal["slice_within_1"] == 1.0
    assert spinal["level_right"] == 0.5 and spinal["swaps"] == 0
    assert foraminal["points"] == 2 and foraminal["missed"] == 1 and foraminal["swaps"] == 1
    # (-13, 5, 0) vs (14, 5, 0): all 27 mm along the sagittal normal, i.e. 0 mm in plane, 7 slices
    assert (
        foraminal["inplane_mm_median"] == pytest.approx(0.0) and foraminal["slice_within_1"] == 0.0
    )
    assert (
        s["groups"]["subarticular"]["points"] == 0
        and s["groups"]["subarticular"]["inplane_mm_p90"] is None
    )


def test_baseline_is_the_mean_normalised_position(phantom_root: Path) -> None:
    tables = load_tables(phantom_root)
    studies = [
        load_study(phantom_root / "train_images" / str(s), tables.series) for s in (101, 102)
    ]
    pts = [
        world_points(st, tables.coordinates[tables.coordinates.study_id == st.study_id])
        for st in studies
    ]
    # hand-made labels: canal L1/L2 at column 10 in one study, 20 in the other; slices 2 and 5 of 9
    canal = [p[(p.condition == CANAL) & (p.level == "l1_l2")].index[0] for p in pts]
    pts[0].loc[canal[0], ["x", "y", "slice"]] = (10.0, 4.0, 2)
    pts[1].loc[canal[1], ["x", "y", "slice"]] = (20.0, 8.0, 5)
    base = MeanPositionBaseline.fit(list(zip(studies, pts)))
    u, v, r = base.means[(CANAL, "l1_l2")]
    assert (u, v, r) == pytest.approx(
        ((10.5 + 20.5) / 2 / 48, (4.5 + 8.5) / 2 / 48, (2 / 8 + 5 / 8) / 2)
    )
    table = base.locate(studies[0]).set_index(["condition", "level"])
    row = table.loc[(CANAL, "l1_l2")]
    assert (row.x, row.y) == pytest.approx((15.0, 6.0))
    assert (
        row.slice_index == 4 and row.series_id == 2 and row.reason == ""
    )  # round(0.4375 * 8) = 4 (3.5 -> 4)
    # subarticular: the axial series has two stacks; relative positions count over both
    sub = table.loc[("left_subarticular_stenosis", "l1_l2")]
    assert (
        sub.series_id == 3 and sub.stack_index == 1
    )  # L1/L2 lies in the upper stack (second along +z)
