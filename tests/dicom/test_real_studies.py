"""The three real RSNA studies (../shared/data/rsna_dicom, read at run time, never copied into the
repository): RLE decoding, tilted axial stacks, instance order, laterality, sagittal -> axial
projection, and the series types decided three ways (table, header descriptions, no description).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from spinegrade.constants import AXIAL_T2, LEVELS, SAGITTAL_T1, SAGITTAL_T2
from spinegrade.data.tables import read_coordinates, read_series
from spinegrade.dicom import (
    Study,
    Volume,
    load_study,
    nearest_axial_slice,
    read_series_headers,
    read_slice,
    series_from_stacks,
)

TRAINING = (100206310, 1002894806)
TEST = 44036939
FOLDERS = {
    100206310: "train_images/100206310",
    1002894806: "train_images/1002894806",
    TEST: "test_images/44036939",
}
#: Stacks of each training study's axial series (README: 5-7, each tilted to one disc).
AXIAL_STACKS = {100206310: 7, 1002894806: 5}


@pytest.fixture(scope="module")
def root(shared_data) -> Path:  # type: ignore[no-untyped-def]
    return shared_data("rsna_dicom")


@pytest.fixture(scope="module")
def studies(root: Path) -> dict[int, Study]:
    """Each real study, read without the descriptions table."""
    return {sid: load_study(root / folder) for sid, folder in FOLDERS.items()}


@pytest.fixture(scope="module")
def table(root: Path) -> pd.DataFrame:
    """The descriptions of the three studies' series (train and test tables)."""
    return pd.concat(
        [
            read_series(root / "train_series_descriptions.csv"),
            read_series(root / "test_series_descriptions.csv"),
        ]
    )


@pytest.fixture(scope="module")
def coords(root: Path) -> pd.DataFrame:
    return read_coordinates(root / "train_label_coordinates.csv")


@pytest.fixture(scope="module")
def undescribed(root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Study]:
    """Each real study read from copies (in tmp_path) whose SeriesDescription tag is deleted."""
    out = tmp_path_factory.mktemp("undescribed")
    for folder in FOLDERS.values():
        for path in (root / folder).rglob("*.dcm"):
            ds = pydicom.dcmread(path)
            del ds.SeriesDescription
            target = out / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target)
    return {sid: load_study(out / folder) for sid, folder in FOLDERS.items()}


def slice_origins(vol: Volume) -> np.ndarray:
    """(slices, 3) LPS mm of pixel (0, 0) of each slice of `vol`, by its affine."""
    k = np.arange(vol.shape[0])
    return vol.voxel_to_world(np.c_[np.zeros_like(k), np.zeros_like(k), k])


def test_rle_pixels_equal_an_independent_decoder(root: Path):
    pytest.importorskip("rle", reason="pylibjpeg-rle (the test extra) is the independent decoder")
    from pydicom.pixels import pixel_array

    for folder in FOLDERS.values():
        for series in sorted((root / folder).iterdir()):
            path = series / "1.dcm"
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
            assert ds.file_meta.MediaStorageSOPClassUID == pydicom.uid.EnhancedMRImageStorage
            assert "Modality" not in ds and ds.get("NumberOfFrames", 1) == 1
            assert (ds.BitsAllocated, ds.BitsStored) == (16, 12)
            header, pixels = read_slice(path)  # pydicom's own RLE decoder
            other = pixel_array(path, decoding_plugin="pylibjpeg")  # pylibjpeg-rle, in Rust
            assert pixels.dtype == np.uint16 and pixels.shape == (header.rows, header.cols)
            assert 0 < pixels.max() < 2**12
            np.testing.assert_array_equal(pixels, other)


@pytest.mark.parametrize("sid", TRAINING)
def test_tilted_axial_stacks(studies, coords, root, sid):
    axial = studies[sid].first(AXIAL_T2)
    stacks = axial.stacks
    assert len(stacks) == AXIAL_STACKS[sid]
    normals = np.array([v.normal for v in stacks])
    angles = np.degrees(np.arccos(np.clip(normals @ normals.T, -1, 1)))
    assert angles.max() > 15  # the stacks are tilted to their discs, not one block
    assert len({tuple(np.round(n, 2)) for n in normals}) >= 3
    headers = {
        h.instance_number: h
        for h in read_series_headers(root / FOLDERS[sid] / str(axial.series_id))
    }
    for v in stacks:  # each stack regular: every file's IPP where the stack's affine puts it
        actual = np.array([headers[int(i)].position for i in v.instance_numbers])
        np.testing.assert_allclose(slice_origins(v), actual, atol=0.01)
        assert np.all(np.diff(actual @ v.normal) > 0)
    labelled = coords[
        (coords.study_id == sid) & coords.condition.str.endswith("subarticular_stenosis")
    ]
    assert len(labelled) == 10
    for inst in labelled.instance_number:
        assert sum(int(inst) in v.instance_numbers for v in stacks) == 1
    used = {
        k
        for inst in labelled.instance_number
        for k, v in enumerate(stacks)
        if inst in v.instance_numbers
    }
    assert len(used) == 5  # the five levels' points lie in five different stacks


@pytest.mark.parametrize(
    "sid, instance_one_on", [(100206310, "right"), (1002894806, "right"), (TEST, "left")]
)
def test_sagittal_instance_order_is_opposite_between_studies(studies, sid, instance_one_on):
    for series_type in (SAGITTAL_T1, SAGITTAL_T2):
        [vol] = studies[sid].first(series_type).stacks
        x = slice_origins(vol)[:, 0]
        one = int(np.flatnonzero(vol.instance_numbers == 1)[0])
        assert x[one] == (x.min() if instance_one_on == "right" else x.max())  # LPS: +x is left
        assert sorted(vol.instance_numbers.tolist()) == list(range(1, vol.shape[0] + 1))
        assert np.all(np.diff(slice_origins(vol) @ vol.normal) > 0)  # sorted along its normal


@pytest.mark.parametrize("sid", TRAINING)
def test_left_foramina_lie_at_larger_x(studies, coords, sid):
    [vol] = studies[sid].first(SAGITTAL_T1).stacks
    rows = coords[(coords.study_id == sid) & coords.condition.str.endswith("foraminal_narrowing")]
    x = {
        side: [
            vol.world_of_pixel(r.instance_number, r.x, r.y)[0]
            for r in rows[rows.condition.str.startswith(side)].itertuples()
        ]
        for side in ("left", "right")
    }
    assert len(x["left"]) == len(x["right"]) == 5
    assert min(x["left"]) > max(x["right"])


def test_sagittal_canal_points_project_onto_the_labelled_axial_slices(studies, coords):
    """A level's subarticular points labelled on two instances (1002894806 L1/L2, L2/L3, L5/S1):
    the projection must be within one slice, in the same stack, of either of them."""
    rows, hits = [], 0
    for sid in TRAINING:
        study = studies[sid]
        [sagittal] = study.first(SAGITTAL_T2).stacks
        axial = study.first(AXIAL_T2).stacks
        for level in LEVELS:
            at = coords[(coords.study_id == sid) & (coords.level == level)]
            canal = at[at.condition == "spinal_canal_stenosis"].iloc[0]
            hit = nearest_axial_slice(
                study, sagittal.world_of_pixel(canal.instance_number, canal.x, canal.y)
            )
            labelled = sorted(
                set(at[at.condition.str.endswith("subarticular_stenosis")].instance_number)
            )
            near = [
                i
                for i in labelled
                if i in axial[hit.stack_index].instance_numbers
                and abs(axial[hit.stack_index].slice_index(i) - hit.slice_index) <= 1
            ]
            hits += bool(near)
            rows.append(
                f"{sid} {level}  labelled {'/'.join(map(str, labelled)):6s} projected "
                f"{hit.instance_number:3d}  distance {hit.distance_mm:.2f} mm  "
                f"{'ok' if near else 'MISS'}"
            )
    print("\n" + "\n".join(rows))
    assert hits == 10


def test_nine_real_series_typed_three_ways(studies, undescribed, table):
    expected = {(sid, int(s)): d for sid, s, d in table.itertuples(index=False) if sid in FOLDERS}
    assert len(expected) == 9
    lines = []
    for sid, study in studies.items():
        loaded = [(s.series_id, s.stacks) for s in study.series]
        described = {
            series_id: d for (study_id, series_id), d in expected.items() if study_id == sid
        }
        ways = {
            "table": series_from_stacks(loaded, described),
            "header description": study.series,
            "no description": undescribed[sid].series,
        }
        for way, series in ways.items():
            assert [expected[(sid, s.series_id)] for s in series] == [
                s.series_type for s in series
            ], way
            lines += [
                f"{sid} {s.series_id:>10} {way:18s} {s.series_type:16s} {s.note}" for s in series
            ]
        for s in ways["no description"]:
            assert s.description == ""
            plane_only = s.series_type == AXIAL_T2
            assert s.note.startswith(
                "axial geometry" if plane_only else "pixel contrast: midline fade"
            )
    print("\n" + "\n".join(lines))
