"""Helpers for the DICOM tests: rotations and a terse `write_series` with test defaults."""

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
    """`write(name, pixels, **kw)` -> folder: write_series into tmp_path/name with axial defaults."""

    def _write(name: str, pixels: np.ndarray, **kw: Any) -> Path:
        folder = tmp_path / name
        defaults: dict[str, Any] = dict(
            origin=(0.0, 0.0, 0.0), row_dir=(1, 0, 0), col_dir=(0, 1, 0), pixel_spacing=(1.0, 1.0),
            slice_thickness=3.0, series_description="AX T2", study_uid=make_uid("t", "study"),
            series_uid=make_uid("t", name), series_number=1,
        )
        write_series(folder, pixels, **{**defaults, **kw})
        return folder

    return _write


def ramp(slices: int, rows: int, cols: int) -> np.ndarray:
    """uint16 (slices, rows, cols) with value slice*1000 + row*cols + col."""
    return (np.arange(slices)[:, None, None] * 1000 + np.arange(rows * cols).reshape(rows, cols)).astype(np.uint16)
