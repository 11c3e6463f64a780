"""DICOM files in any arrangement: group them by StudyInstanceUID and SeriesInstanceUID.

Folders mean nothing here: every file is read as DICOM (header first, pixels when a study is
loaded), and the UIDs decide which study and series it belongs to. Files that are not readable
DICOM are returned with their one-line reason, never fatal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from spinegrade.dicom.headers import SliceHeader, read_header, read_slice
from spinegrade.errors import DicomError, SpinegradeError

#: Below this many files, reading headers in worker processes costs more than it saves.
_POOL_MIN_FILES = 64


def group_by_study(
    files: Sequence[Path], *, workers: int = 0
) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """`({StudyInstanceUID: files}, [(file, why it is not usable DICOM)])`, headers only.

    `workers > 0` reads the headers in that many processes (for more than a few dozen files).
    Studies keep the order of `files`.
    """
    headers = _headers(list(files), workers)
    by_study: dict[str, list[Path]] = defaultdict(list)
    ignored: list[tuple[Path, str]] = []
    for path, h in zip(files, headers):
        if isinstance(h, str):
            ignored.append((path, h))
        else:
            by_study[h.study_uid].append(path)
    return dict(by_study), ignored


def read_by_series(
    files: Sequence[Path],
) -> tuple[dict[str, list[tuple[SliceHeader, np.ndarray]]], list[str]]:
    """`({SeriesInstanceUID: [(header, stored pixels (rows, cols))]}, [one line per unreadable
    file])`."""
    by_series: dict[str, list[tuple[SliceHeader, np.ndarray]]] = defaultdict(list)
    skipped: list[str] = []
    for path in files:
        try:
            header, pixels = read_slice(path)
        except SpinegradeError as exc:
            skipped.append(str(exc))
            continue
        by_series[header.series_uid].append((header, pixels))
    return dict(by_series), skipped


def _headers(files: list[Path], workers: int) -> list[SliceHeader | str]:
    """Header of each file, or the reason it cannot be read (one line)."""
    if workers > 0 and len(files) > _POOL_MIN_FILES:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(_header_or_reason, files, chunksize=32))
    return [_header_or_reason(f) for f in files]


def _header_or_reason(path: Path) -> SliceHeader | str:
    try:
        return read_header(path)
    except DicomError as exc:
        return exc.reason
