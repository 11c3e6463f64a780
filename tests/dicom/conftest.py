"""Helpers for the DICOM tests: rotations, a terse `write_series` with test defaults, phantoms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spinegrade.dicom import make_uid, write_series


def rot_x(deg: float) -> np.ndarray:
    """(3, 3) rotation about the LPS x axis."""
    a = np.deg2rad(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


@pytest.fixture
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`write(name, pixels, **kw)` -> folder: write_series into tmp_path/name with axial
    defaults."""

    def _write(name: str, pixels: np.ndarray, **kw: Any) -> Path:
        folder = tmp_path / name
        defaults: dict[str, Any] = dict(
            origin=(0.0, 0.0, 0.0),
            row_dir=(1, 0, 0),
            col_dir=(0, 1, 0),
            pixel_spacing=(1.0, 1.0),
            slice_thickness=3.0,
            series_description="AX T2",
            study_uid=make_uid("t", "study"),
            series_uid=make_uid("t", name),
            series_number=1,
        )
        write_series(folder, pixels, **{**defaults, **kw})
        return folder

    return _write


def ramp(slices: int, rows: int, cols: int) -> np.ndarray:
    """uint16 (slices, rows, cols) with value slice*1000 + row*cols + col."""
    return (
        np.arange(slices)[:, None, None] * 1000 + np.arange(rows * cols).reshape(rows, cols)
    ).astype(np.uint16)


def spine_pixels(
    csf: int, fat: int, muscle: int, slices: int = 15, step: float = 3.0, fat_cols: int = 6
) -> np.ndarray:
    """(slices, 40, 40) uint16 sagittal phantom, slices `step` mm apart across the patient: a CSF
    tube in the midline (within 8 mm of the centre slice; columns 18-21), a fat layer behind it
    on every slice (`fat_cols` columns from 30), muscle elsewhere."""
    x = (np.arange(slices) - (slices - 1) / 2) * step
    px = np.full((slices, 40, 40), muscle, dtype=np.uint16)
    px[np.abs(x) <= 8, :, 18:22] = csf
    px[:, :, 30 : 30 + fat_cols] = fat
    return px


#: Signal of CSF, fat and muscle (the synthetic phantom's T1 and T2 tables, x 1000).
T1_SIGNAL, T2_SIGNAL = (140, 920, 330), (1000, 720, 220)
