"""Studies: series types, skipped series, and the axial slice nearest to a world point."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import AXIAL_T2, SAGITTAL_T1, SAGITTAL_T2
from spinegrade.dicom import classify_series, load_series, load_study, nearest_axial_slice
from spinegrade.dicom.study import describe, series_type_from_description
from spinegrade.errors import DicomError

from .conftest import rot_x


def test_make_study_loads_with_types_from_dicom(make_study):
    study = load_study(make_study(1001))
    assert study.study_id == 1001 and study.skipped == []
    assert [(s.series_id, s.series_type) for s in study.series] == [(1, SAGITTAL_T1), (2, SAGITTAL_T2), (3, AXIAL_T2)]
    assert study.first(AXIAL_T2).stacks[0].shape == (5, 32, 32)
    assert [sid for sid, _ in study.axial_stacks()] == [3]
    assert study.first("Coronal") is None


def test_table_overrides_dicom_description(make_study):
    root = make_study(7)
    table = pd.DataFrame({"study_id": [7, 7, 8], "series_id": [1, 2, 1],
                          "series_description": ["Sagittal T2/STIR", "Sagittal T1", "Axial T2"]})
    study = load_study(root, table)
    assert [s.series_type for s in study.series] == [SAGITTAL_T2, SAGITTAL_T1, AXIAL_T2]
    assert "table" in study.series[0].note and "SeriesDescription" in study.series[2].note


@pytest.mark.parametrize("text, expected", [
    ("SAG T1", SAGITTAL_T1), ("Sagittal T2/STIR", SAGITTAL_T2), ("STIR", SAGITTAL_T2), ("t2_tse_sag", SAGITTAL_T2),
    ("AX T2", AXIAL_T2), ("T2 TRA", AXIAL_T2), ("Axial T2", AXIAL_T2), ("AX T1", None), ("Localizer", None), ("", None),
])
def test_series_type_from_description(text, expected):
    assert series_type_from_description(text) == expected


def test_classify_by_geometry_and_contrast(make_series, tmp_path):
    ax = load_series(make_series(tmp_path / "9" / "1", "axial", series_description=""))
    sag = load_series(make_series(tmp_path / "9" / "2", "sagittal", series_description=""))
    assert classify_series(ax) == AXIAL_T2
    assert classify_series(sag) is None  # contrast unknown: stays unknown
    t1 = replace(sag, meta=replace(sag.meta, echo_time=10.0, repetition_time=500.0))
    stir = replace(sag, meta=replace(sag.meta, inversion_time=160.0))
    t2 = replace(sag, meta=replace(sag.meta, echo_time=90.0, repetition_time=3000.0))
    assert (classify_series(t1), classify_series(stir), classify_series(t2)) == (SAGITTAL_T1, SAGITTAL_T2, SAGITTAL_T2)
    coronal = load_series(make_series(tmp_path / "9" / "3", row_dir=(1, 0, 0), col_dir=(0, 0, -1)))
    np.testing.assert_allclose(coronal.normal, [0, 1, 0])
    assert classify_series(coronal) is None


def test_unknown_series_kept_bad_series_skipped(make_series, tmp_path):
    root = tmp_path / "55"
    make_series(root / "1", "sagittal", series_description="Localizer")
    (root / "2").mkdir()
    (root / "2" / "1.dcm").write_bytes(b"broken")
    study = load_study(root)
    assert [(s.series_id, s.series_type) for s in study.series] == [(1, None)]
    assert "unknown type" in study.series[0].note
    assert len(study.skipped) == 1 and "2/1.dcm" in study.skipped[0]


def test_study_without_usable_series_raises(tmp_path):
    (tmp_path / "66" / "1").mkdir(parents=True)
    with pytest.raises(DicomError, match=r"66: no usable series in the study .*no \.dcm files"):
        load_study(tmp_path / "66")
    with pytest.raises(DicomError, match="study folder does not exist"):
        load_study(tmp_path / "67")


@pytest.fixture
def two_axial(make_series, tmp_path):
    """Series 3: axial, z = 0, 4, 8, 12 (instances 1-4), 32x32 1-mm pixels from (-16, -16).
    Series 4: tilted 30 deg about x, c = (0, cos30, sin30), n = (0, -sin30, cos30), 4 slices 4 mm
    apart from IPP (-16, -16, -40), instances 13, 12, 11, 10 along n (reversed)."""
    root = tmp_path / "77"
    make_series(root / "3", "axial", slices=4, origin=(-16, -16, 0), slice_step=4.0)
    make_series(root / "4", "axial", slices=4, origin=(-16, -16, -40), col_dir=rot_x(30) @ [0, 1, 0],
                slice_step=4.0, instance_numbers=[13, 12, 11, 10])
    return load_study(root)


def test_nearest_axial_slice_picks_tilted_stack(two_axial):
    # p - IPP = (18, 19, 9); along n: -9.5 + 9 cos30 = -1.7057713 -> slice 0, within half a spacing
    hit = nearest_axial_slice(two_axial, [2, 3, -31])
    assert (hit.series_id, hit.stack_index, hit.slice_index, hit.instance_number) == (4, 0, 0, 13)
    assert hit.distance_mm == pytest.approx(9.5 - 9 * np.sqrt(3) / 2, abs=1e-6)
    assert hit.col == pytest.approx(18, abs=1e-6)
    assert hit.row == pytest.approx(19 * np.sqrt(3) / 2 + 4.5, abs=1e-6)


def test_nearest_axial_slice_picks_straight_stack(two_axial):
    hit = nearest_axial_slice(two_axial, [1.5, -2, 9.2])
    assert (hit.series_id, hit.slice_index, hit.instance_number) == (3, 2, 3)
    assert (hit.distance_mm, hit.col, hit.row) == pytest.approx((1.2, 17.5, 14.0), abs=1e-6)


def test_stack_holding_the_point_beats_a_nearer_plane(make_series, tmp_path):
    root = tmp_path / "88"
    make_series(root / "3", "axial", slices=5, origin=(-16, -16, 0), slice_step=4.0)  # z 0..16, x -16..16
    make_series(root / "4", "axial", slices=2, origin=(20, -16, 20), slice_step=8.0)  # z 20, 28, x 20..52
    study = load_study(root)
    hit = nearest_axial_slice(study, [30, 0, 17])  # 1 mm from series 3's plane z=16, but outside its image
    assert (hit.series_id, hit.slice_index, hit.distance_mm) == (4, 0, pytest.approx(3.0))
    hit = nearest_axial_slice(study, [0, 0, 17])  # inside series 3 (half a spacing beyond z=16)
    assert (hit.series_id, hit.slice_index, hit.distance_mm) == (3, 4, pytest.approx(1.0))


def test_no_axial_series_gives_none(make_series, tmp_path):
    make_series(tmp_path / "99" / "1", "sagittal")
    assert nearest_axial_slice(load_study(tmp_path / "99"), [0, 0, 0]) is None


def test_describe_and_cli(make_study, monkeypatch, capsys):
    from spinegrade import cli

    root = make_study(1234)
    rows, skipped = describe(root)
    assert [(r["series"], r["type"], r["slices"], r["size"], r["instances"]) for r in rows] == [
        ("1", SAGITTAL_T1, "5", "32x32", "1..5"), ("2", SAGITTAL_T2, "5", "32x32", "1..5"),
        ("3", AXIAL_T2, "5", "32x32", "1..5")]
    assert rows[2]["normal"] == "+0.00, +0.00, +1.00" and skipped == []
    assert describe(root / "3")[0][0]["type"] == AXIAL_T2  # a single series folder
    monkeypatch.setattr("sys.argv", ["spinegrade", "dicom-info", str(root / "nope")])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2 and "study folder does not exist" in capsys.readouterr().err
