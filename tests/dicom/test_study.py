"""Studies: series types, skipped series, and the slice of a series type nearest a world point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest

from spinegrade.constants import AXIAL_T2, SAGITTAL_T1, SAGITTAL_T2
from spinegrade.dicom import (
    load_stacks,
    load_study,
    nearest_axial_slice,
    nearest_slice,
    series_from_stacks,
)
from spinegrade.dicom.study import describe, series_type_from_description
from spinegrade.errors import DicomError

from .conftest import T1_SIGNAL, T2_SIGNAL, rot_x, spine_pixels


def test_make_study_loads_with_types_from_dicom(make_study):
    study = load_study(make_study(1001))
    assert study.study_id == 1001 and study.skipped == []
    assert [(s.series_id, s.series_type) for s in study.series] == [
        (1, SAGITTAL_T1),
        (2, SAGITTAL_T2),
        (3, AXIAL_T2),
    ]
    assert study.first(AXIAL_T2).stacks[0].shape == (5, 32, 32)
    assert [sid for sid, _ in study.axial_stacks()] == [3]
    assert study.first("Coronal") is None


def test_table_overrides_dicom_description(make_study):
    root = make_study(7)
    table = pd.DataFrame(
        {
            "study_id": [7, 7, 8],
            "series_id": [1, 2, 1],
            "series_description": ["Sagittal T2/STIR", "Sagittal T1", "Axial T2"],
        }
    )
    study = load_study(root, table)
    assert [s.series_type for s in study.series] == [SAGITTAL_T2, SAGITTAL_T1, AXIAL_T2]
    assert study.series[0].note == "series descriptions table: 'Sagittal T2/STIR'"
    assert study.series[2].note == "description 'Axial T2' + axial geometry"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("SAG T1", SAGITTAL_T1),
        ("Sagittal T2/STIR", SAGITTAL_T2),
        ("STIR", SAGITTAL_T2),
        ("t2_tse_sag", SAGITTAL_T2),
        ("AX T2", AXIAL_T2),
        ("T2 TRA", AXIAL_T2),
        ("Axial T2", AXIAL_T2),
        ("T2_TSE_TRA", AXIAL_T2),
        ("T1_TSE_SAG", SAGITTAL_T1),
        ("Sag T2 FS", SAGITTAL_T2),
        ("SAG T1 FSE", SAGITTAL_T1),
        ("t2_tse_sag_384", SAGITTAL_T2),
        ("T2 TSE AXIAL", AXIAL_T2),
        ("SAG STIR", SAGITTAL_T2),
        ("T2", None),
        ("T1", None),
        ("AX T1", None),
        ("SAG T1 +C", None),
        ("COR T2", None),
        ("Localizer", None),
        ("", None),
    ],
)
def test_series_type_from_description(text, expected):
    assert series_type_from_description(text) == expected


#: (row_dir, col_dir) of each plane for make_series.
PLANES = {
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
}


def _typed(folder, **tags):  # type: ignore[no-untyped-def]
    """The one typed Series of a series folder, after setting `tags` on each of its files."""
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    [series] = series_from_stacks([(1, load_stacks(folder))])
    return series


@pytest.mark.parametrize(
    "plane, description, expected, note",
    [
        ("sagittal", "T2", SAGITTAL_T2, "description 'T2' + sagittal geometry"),
        ("sagittal", "T1", SAGITTAL_T1, "description 'T1' + sagittal geometry"),
        ("axial", "T2", AXIAL_T2, "description 'T2' + axial geometry"),
        (
            "axial",
            "T1",
            None,
            "unknown type: description 'T1' + axial geometry; a T1 axial series is not one of ours",
        ),
        (
            "axial",
            "SAG T2",
            AXIAL_T2,
            "description 'SAG T2' + axial geometry; the description names sagittal, "
            "the geometry is axial: the geometry decides",
        ),
        ("sagittal", "AX T1", SAGITTAL_T1, "the geometry decides"),
        (
            "sagittal",
            "Localizer",
            None,
            "unknown type: description 'Localizer' names a localizer series",
        ),
        ("sagittal", "SAG T1 +C", None, "names contrast-enhanced series"),
        ("coronal", "COR T2", None, "unknown type: coronal geometry (normal +0.00, +1.00, +0.00)"),
    ],
)
def test_description_gives_the_contrast_geometry_the_plane(
    make_series, tmp_path, plane, description, expected, note
):
    r, c = PLANES[plane]
    series = _typed(
        make_series(tmp_path / "1", row_dir=r, col_dir=c, series_description=description)
    )
    assert series.series_type == expected and note in series.note


@pytest.mark.parametrize(
    "tags, expected, note",
    [
        (
            dict(EchoTime=12, RepetitionTime=550, ScanningSequence="SE", SequenceName="*tse2d1_3"),
            SAGITTAL_T1,
            "acquisition tags (TE 12 ms, TR 550 ms, SE, *tse2d1_3): short TE and TR, T1",
        ),
        (
            dict(
                EchoTime=40, RepetitionTime=4000, InversionTime=160, ScanningSequence=["SE", "IR"]
            ),
            SAGITTAL_T2,
            "acquisition tags (TE 40 ms, TR 4000 ms, TI 160 ms, SE\\IR): short-TI inversion "
            "recovery, STIR",
        ),
        (dict(EchoTime=100, RepetitionTime=3500), SAGITTAL_T2, "long TE, T2"),
        (
            dict(EchoTime=30, RepetitionTime=3000),
            None,
            "unknown type: acquisition tags (TE 30 ms, TR 3000 ms) fit",
        ),
        (dict(EchoTime=15, RepetitionTime=500, ScanningSequence="GR"), None, "gradient echo"),
    ],
)
def test_acquisition_tags_give_the_contrast_without_a_description(
    make_series, tmp_path, tags, expected, note
):
    series = _typed(make_series(tmp_path / "1", "sagittal", series_description=""), **tags)
    assert series.series_type == expected and note in series.note


def test_axial_tags_saying_t1_rule_it_out(make_series, tmp_path):
    series = _typed(
        make_series(tmp_path / "1", "axial", series_description=""), EchoTime=10, RepetitionTime=450
    )
    assert series.series_type is None and "a T1 axial series is not one of ours" in series.note


def _pixel_study(make_series, root, pixels: dict[int, np.ndarray]):  # type: ignore[no-untyped-def]
    """A study of sagittal series (series_id -> pixels) and an axial one, all undescribed."""
    for sid, px in pixels.items():
        make_series(
            root / str(sid), "sagittal", px.shape[0], px.shape[1:], pixels=px, series_description=""
        )
    make_series(root / "9", "axial", series_description="")
    return load_study(root)


def test_pixels_give_the_contrast_without_description_or_tags(make_series, tmp_path):
    study = _pixel_study(
        make_series, tmp_path / "5", {1: spine_pixels(*T1_SIGNAL), 2: spine_pixels(*T2_SIGNAL)}
    )
    assert [s.series_type for s in study.series] == [SAGITTAL_T1, SAGITTAL_T2, AXIAL_T2]
    t1, t2, ax = (s.note for s in study.series)
    assert (
        t1 == "pixel contrast: midline fade 0.00 <= 0.45 (the brightest tissue continues laterally)"
    )
    assert t2 == "pixel contrast: midline fade 1.00 >= 0.70 (the brightest tissue is midline CSF)"
    assert (
        ax.startswith("axial geometry, no contrast in the description or tags")
        and "only axial type" in ax
    )


def test_weak_pixels_typed_relative_to_the_other_sagittal(make_series, tmp_path):
    weak = spine_pixels(900, 900, 200, fat_cols=3)  # midline fade 0.57
    alone = _pixel_study(make_series, tmp_path / "6", {1: weak})
    assert alone.series[0].series_type is None
    assert (
        alone.series[0].note
        == "unknown type: pixel contrast weak, midline fade 0.57 between 0.45 and 0.70"
    )
    pair = _pixel_study(make_series, tmp_path / "7", {1: weak, 2: spine_pixels(*T1_SIGNAL)})
    assert [s.series_type for s in pair.series[:2]] == [SAGITTAL_T2, SAGITTAL_T1]
    assert pair.series[0].note == "pixel contrast relative to series 2: midline fade 0.57 vs 0.00"
    assert pair.series[1].note.startswith("pixel contrast: midline fade 0.00 <= 0.45")
    close = _pixel_study(
        make_series, tmp_path / "8", {1: weak, 2: spine_pixels(800, 800, 200, fat_cols=4)}
    )
    assert [s.series_type for s in close.series[:2]] == [
        None,
        None,
    ]  # fades 0.57 and 0.50: too close


def test_stacks_in_several_planes_are_not_ours(make_series, tmp_path):
    folder = make_series(
        tmp_path / "1", "sagittal", series_description="SAG T2", instance_numbers=[1, 2, 3, 4, 5]
    )
    make_series(
        tmp_path / "1", "axial", series_description="SAG T2", instance_numbers=[6, 7, 8, 9, 10]
    )
    series = _typed(folder)
    assert series.series_type is None and series.note.startswith(
        "unknown type: stacks in several planes"
    )


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
    make_series(
        root / "4",
        "axial",
        slices=4,
        origin=(-16, -16, -40),
        col_dir=rot_x(30) @ [0, 1, 0],
        slice_step=4.0,
        instance_numbers=[13, 12, 11, 10],
    )
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
    make_series(
        root / "3", "axial", slices=5, origin=(-16, -16, 0), slice_step=4.0
    )  # z 0..16, x -16..16
    make_series(
        root / "4", "axial", slices=2, origin=(20, -16, 20), slice_step=8.0
    )  # z 20, 28, x 20..52
    study = load_study(root)
    hit = nearest_axial_slice(
        study, [30, 0, 17]
    )  # 1 mm from series 3's plane z=16, but outside its image
    assert (hit.series_id, hit.slice_index, hit.distance_mm) == (4, 0, pytest.approx(3.0))
    hit = nearest_axial_slice(study, [0, 0, 17])  # inside series 3 (half a spacing beyond z=16)
    assert (hit.series_id, hit.slice_index, hit.distance_mm) == (3, 4, pytest.approx(1.0))


def test_nearest_slice_of_a_sagittal_series_and_whether_the_point_is_in_its_image(
    make_series, tmp_path
):
    root = tmp_path / "66"
    make_series(root / "2", "sagittal")
    make_series(root / "3", "axial", slices=4, origin=(-16, -16, 0), slice_step=4.0)
    study = load_study(root)
    sagittal = study.series[0]
    vol = sagittal.stacks[0]
    point = vol.voxel_to_world([[3.0, 5.0, 1.25]])[0]  # a quarter slice past slice 1
    hit = nearest_slice(study, point, sagittal.series_type)
    assert (hit.series_id, hit.slice_index, hit.volume) == (2, 1, vol) and hit.in_image
    assert (hit.col, hit.row) == pytest.approx((3.0, 5.0), abs=1e-6)
    assert hit.distance_mm == pytest.approx(0.25 * vol.spacing[2], abs=1e-6)
    outside = nearest_slice(study, [100.0, 0.0, 4.0], AXIAL_T2)  # x = 100: beyond every column
    assert outside.series_id == 3 and not outside.in_image
    assert nearest_slice(study, point, SAGITTAL_T1) is None


def test_no_axial_series_gives_none(make_series, tmp_path):
    make_series(tmp_path / "99" / "1", "sagittal")
    assert nearest_axial_slice(load_study(tmp_path / "99"), [0, 0, 0]) is None


def test_describe_and_cli(make_study, monkeypatch, capsys):
    from spinegrade import cli

    root = make_study(1234)
    rows, skipped = describe(root)
    assert [(r["series"], r["type"], r["slices"], r["size"], r["instances"]) for r in rows] == [
        ("1", SAGITTAL_T1, "5", "32x32", "1..5"),
        ("2", SAGITTAL_T2, "5", "32x32", "1..5"),
        ("3", AXIAL_T2, "5", "32x32", "1..5"),
    ]
    assert rows[2]["normal"] == "+0.00, +0.00, +1.00" and skipped == []
    assert describe(root / "3")[0][0]["type"] == AXIAL_T2  # a single series folder
    monkeypatch.setattr("sys.argv", ["spinegrade", "dicom-info", str(root / "nope")])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2 and "study folder does not exist" in capsys.readouterr().err
