"""Evidence of a series' plane and contrast: descriptions, geometry, acquisition tags, pixels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from spinegrade.dicom import Volume, load_series
from spinegrade.dicom.contrast import (
    AXIAL,
    CORONAL,
    SAGITTAL,
    T1,
    T2,
    contrast_from_tags,
    midline_fade,
    read_description,
)

from .conftest import T1_SIGNAL, T2_SIGNAL, rot_x, spine_pixels


@pytest.mark.parametrize(
    "text, contrast, plane",
    [
        ("T1", T1, None),
        ("T2", T2, None),
        ("SAG T1", T1, SAGITTAL),
        ("T1_TSE_SAG", T1, SAGITTAL),
        ("t2_tse_sag_384", T2, SAGITTAL),
        ("STIR", T2, None),
        ("SAG STIR", T2, SAGITTAL),
        ("AX T2", T2, AXIAL),
        ("T2 TSE AXIAL", T2, AXIAL),
        ("T2_TSE_TRA", T2, AXIAL),
        ("Sag T2 FS", T2, SAGITTAL),
        ("SAG T1 FSE", T1, SAGITTAL),
        ("Sagittal T2/STIR", T2, SAGITTAL),
        ("Axial T2", T2, AXIAL),
        ("t2w_tse_tra", T2, AXIAL),
        ("SAG T1 FLAIR", T1, SAGITTAL),
        ("sag_tirm", T2, SAGITTAL),
        ("COR T2", T2, CORONAL),
        ("AX T1", T1, AXIAL),
        ("T1 T2 combined", None, None),
        ("SAG T10", None, SAGITTAL),
        ("", None, None),
        ("SAG AX T2", T2, None),
    ],
)
def test_description_contrast_and_plane(text, contrast, plane):
    words = read_description(text)
    assert (words.contrast, words.plane, words.excluded) == (contrast, plane, None)


@pytest.mark.parametrize(
    "text, excluded",
    [
        ("Localizer", "a localizer"),
        ("3-Plane Loc", "a localizer"),
        ("AAHead_Scout", "a localizer"),
        ("SURVEY", "a localizer"),
        ("SAG T1 +C", "contrast-enhanced"),
        ("T1 SAG C+", "contrast-enhanced"),
        ("SAG T1 GAD", "contrast-enhanced"),
        ("T1_TSE_SAG POST", "contrast-enhanced"),
        ("AX T1 + GD", "contrast-enhanced"),
        ("SAG PD", "proton density"),
        ("DWI trace", "diffusion"),
    ],
)
def test_descriptions_that_rule_a_series_out(text, excluded):
    assert read_description(text).excluded == excluded


def test_plane_from_the_normal(make_series, tmp_path):
    sag = load_series(make_series(tmp_path / "1", "sagittal"))
    ax = load_series(make_series(tmp_path / "2", "axial"))
    tilted = load_series(make_series(tmp_path / "3", "axial", col_dir=rot_x(30) @ [0, 1, 0]))
    oblique = load_series(make_series(tmp_path / "4", "axial", col_dir=rot_x(45) @ [0, 1, 0]))
    coronal = load_series(make_series(tmp_path / "5", row_dir=(1, 0, 0), col_dir=(0, 0, -1)))
    assert [v.plane for v in (sag, ax, tilted, oblique, coronal)] == [
        SAGITTAL,
        AXIAL,
        AXIAL,
        "oblique",
        CORONAL,
    ]


@pytest.mark.parametrize(
    "tags, contrast, says",
    [
        (dict(echo_time=10.0, repetition_time=500.0), T1, "short TE and TR"),
        (dict(echo_time=90.0, repetition_time=3000.0), T2, "long TE"),
        (dict(echo_time=40.0, repetition_time=4000.0, inversion_time=160.0), T2, "STIR"),
        (dict(echo_time=30.0, repetition_time=3000.0), None, "fit neither"),  # proton density
        (
            dict(echo_time=20.0, repetition_time=600.0, scanning_sequence="GR"),
            None,
            "gradient echo",
        ),
        (
            dict(echo_time=15.0, repetition_time=400.0, sequence_name="*fl2d1"),
            None,
            "gradient echo",
        ),
        (
            dict(
                echo_time=12.0,
                repetition_time=550.0,
                scanning_sequence="SE",
                sequence_name="*tse2d1_3",
            ),
            T1,
            "short TE and TR",
        ),
    ],
)
def test_contrast_from_acquisition_tags(make_series, tmp_path, tags, contrast, says):
    vol = load_series(make_series(tmp_path / "1", "sagittal"))
    got, evidence = contrast_from_tags(replace(vol.meta, **tags))
    assert got == contrast and says in evidence and evidence.startswith("acquisition tags (")
    assert contrast_from_tags(vol.meta) == (None, "")  # no tags at all: no evidence


def sagittal(make_series, folder, pixels: np.ndarray, description: str = "") -> Volume:
    """`pixels` (slices, rows, cols) written as a sagittal series 3 mm apart, and loaded."""
    return load_series(
        make_series(
            folder,
            "sagittal",
            pixels.shape[0],
            pixels.shape[1:],
            pixels=pixels,
            series_description=description,
        )
    )


def test_midline_fade_tells_csf_from_fat(make_series, tmp_path):
    t2 = sagittal(make_series, tmp_path / "t2", spine_pixels(*T2_SIGNAL))
    t1 = sagittal(make_series, tmp_path / "t1", spine_pixels(*T1_SIGNAL))
    # as bright as fat, CSF is 160 of the 280 brightest voxels: a weak fade
    mixed = sagittal(make_series, tmp_path / "mix", spine_pixels(900, 900, 200, fat_cols=3))
    assert midline_fade(t2) == 1.0 and midline_fade(t1) == 0.0
    assert midline_fade(mixed) == pytest.approx(160 / 280)


def test_midline_fade_needs_both_sides(make_series, tmp_path):
    # 7 slices 3 mm apart reach 9 mm from the centre: no slice 20 mm to either side
    assert (
        midline_fade(sagittal(make_series, tmp_path / "s", spine_pixels(*T2_SIGNAL, slices=7)))
        is None
    )
