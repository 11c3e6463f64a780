"""The two input layouts of `spinegrade slices`, read and checked: PNG slices or PNG crops.

Sagittal T1 slices (`SLICES`): `slices.csv` (`SLICE_COLUMNS`: one row per PNG, with the size of
the original DICOM image) and `points.csv` (`POINT_KEYS`: which target was marked on which slice,
plus `POINT_TRUTH`: where, and the study's grade). Axial T2 crops (`CROPS`): `crops.csv`
(`CROP_KEYS`: one PNG per study level, its three channels neighbouring slices, plus `CROP_GRADES`).
Paths in the tables are relative to the folder.

The truth columns are read only when asked for (`truth=True`, training and evaluation): `predict`
reads the key columns alone, with `usecols`, so it cannot see a grade or a point by accident.
Every expected problem (a missing table, column or image, an unknown condition) is one
`DataError` line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from spinegrade.constants import (
    CONDITION_GROUPS,
    LEVELS,
    TARGET_COLUMNS,
    TARGETS,
    severity_from_label,
)
from spinegrade.errors import DataError

SLICES, CROPS = "slices", "crops"
MODES = (SLICES, CROPS)
SLICES_CSV, POINTS_CSV, CROPS_CSV = "slices.csv", "points.csv", "crops.csv"

SLICE_KEY = ("study_id", "series_id", "instance_number")
SLICE_COLUMNS = (*SLICE_KEY, "file", "orig_rows", "orig_cols")
POINT_KEYS = (*SLICE_KEY, "condition", "level")
POINT_TRUTH = ("x", "y", "severity")
CROP_KEYS = (*SLICE_KEY, "level", "file")
AXIAL_CONDITIONS = (
    "spinal_canal_stenosis",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
CROP_GRADES = AXIAL_CONDITIONS

#: What each layout grades, in `TARGETS` order: the 10 foraminal targets of the Sagittal T1 slices
#: and the 15 axial ones (canal and both subarticular recesses at each level) of the crops.
FORAMINAL_TARGETS: tuple[tuple[str, str], ...] = tuple(
    (c, lv) for c, lv in TARGETS if c in CONDITION_GROUPS["foraminal"]
)
AXIAL_TARGETS: tuple[tuple[str, str], ...] = tuple((c, lv) for c, lv in TARGETS if c in CROP_GRADES)
TARGETS_OF_MODE = {SLICES: FORAMINAL_TARGETS, CROPS: AXIAL_TARGETS}


def detect_mode(folder: str | Path, mode: str | None = None) -> str:
    """`slices` or `crops`: `mode` when given (checked), else from the table the folder holds."""
    root = Path(folder)
    if mode is not None:
        if mode not in MODES:
            raise DataError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
        return mode
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    found = [m for m, name in ((SLICES, SLICES_CSV), (CROPS, CROPS_CSV)) if (root / name).is_file()]
    if len(found) != 1:
        what = "both" if found else "neither"
        raise DataError(
            f"{root}: holds {what} {SLICES_CSV} and {CROPS_CSV}; "
            f"a slices folder has {SLICES_CSV}, a crops folder {CROPS_CSV} (or pass --mode)"
        )
    return found[0]


@dataclass
class SliceFolder:
    """A folder of Sagittal T1 PNG slices: `slices` (`SLICE_COLUMNS`) and `points` (`POINT_KEYS`,
    with `POINT_TRUTH` when read with `truth`; severities snake_case, NaN blank)."""

    root: Path
    slices: pd.DataFrame
    points: pd.DataFrame

    @classmethod
    def open(cls, root: str | Path, *, truth: bool) -> SliceFolder:
        """Read and check the tables (every listed PNG must exist)."""
        root = Path(root)
        slices = read_table(
            root / SLICES_CSV, SLICE_COLUMNS, ints=(*SLICE_KEY, "orig_rows", "orig_cols")
        )
        columns = (*POINT_KEYS, *POINT_TRUTH) if truth else POINT_KEYS
        floats = ("x", "y") if truth else ()
        points = read_table(root / POINTS_CSV, columns, ints=SLICE_KEY, floats=floats)
        _check_names(points, "condition", CONDITION_GROUPS["foraminal"], root / POINTS_CSV)
        _check_names(points, "level", LEVELS, root / POINTS_CSV)
        if truth:
            points["severity"] = _severities(points["severity"], root / POINTS_CSV)
        _check_duplicates(slices, list(SLICE_KEY), root / SLICES_CSV)
        _check_duplicates(points, ["study_id", "condition", "level"], root / POINTS_CSV)
        known = pd.MultiIndex.from_frame(slices[list(SLICE_KEY)])
        absent = ~pd.MultiIndex.from_frame(points[list(SLICE_KEY)]).isin(known)
        if absent.any():
            row = points[absent].iloc[0]
            raise DataError(
                f"{root / POINTS_CSV}: {int(absent.sum())} point(s) on a slice that "
                f"{SLICES_CSV} does not list, e.g. study {row.study_id} series {row.series_id} "
                f"instance {row.instance_number}"
            )
        _check_files(root, slices["file"], SLICES_CSV)
        return cls(root, slices, points)

    def subset(self, study_ids: list[int] | set[int]) -> SliceFolder:
        """The same folder restricted to `study_ids`."""
        ids = set(int(s) for s in study_ids)
        return SliceFolder(
            self.root,
            self.slices[self.slices["study_id"].isin(ids)].reset_index(drop=True),
            self.points[self.points["study_id"].isin(ids)].reset_index(drop=True),
        )

    def studies(self) -> list[int]:
        """The studies that have at least one point, sorted."""
        return sorted(int(s) for s in self.points["study_id"].unique())

    def labels(self) -> pd.DataFrame:
        """The wide labels table (study_id + the 25 target columns; the 15 not foraminal blank)."""
        return wide_labels(
            self.studies(),
            zip(self.points["study_id"], self.points["condition"], self.points["level"]),
            self.points["severity"],
        )


@dataclass
class CropFolder:
    """A folder of Axial T2 PNG crops: `crops` (`CROP_KEYS`, with `CROP_GRADES` when read with
    `truth`; severities snake_case, NaN blank)."""

    root: Path
    crops: pd.DataFrame

    @classmethod
    def open(cls, root: str | Path, *, truth: bool) -> CropFolder:
        """Read and check the table (every listed PNG must exist)."""
        root = Path(root)
        columns = (*CROP_KEYS, *CROP_GRADES) if truth else CROP_KEYS
        crops = read_table(root / CROPS_CSV, columns, ints=SLICE_KEY)
        _check_names(crops, "level", LEVELS, root / CROPS_CSV)
        if truth:
            for column in CROP_GRADES:
                crops[column] = _severities(crops[column], root / CROPS_CSV)
        _check_duplicates(crops, ["study_id", "level"], root / CROPS_CSV)
        _check_files(root, crops["file"], CROPS_CSV)
        return cls(root, crops)

    def subset(self, study_ids: list[int] | set[int]) -> CropFolder:
        """The same folder restricted to `study_ids`."""
        ids = set(int(s) for s in study_ids)
        return CropFolder(
            self.root, self.crops[self.crops["study_id"].isin(ids)].reset_index(drop=True)
        )

    def studies(self) -> list[int]:
        """The studies that have at least one crop, sorted."""
        return sorted(int(s) for s in self.crops["study_id"].unique())

    def labels(self) -> pd.DataFrame:
        """The wide labels table (study_id + the 25 target columns; the 10 foraminal blank)."""
        long = self.crops.melt(["study_id", "level"], list(CROP_GRADES), "condition", "severity")
        return wide_labels(
            self.studies(),
            zip(long["study_id"], long["condition"], long["level"]),
            long["severity"],
        )


Folder = SliceFolder | CropFolder


def open_folder(root: str | Path, mode: str | None = None, *, truth: bool) -> Folder:
    """The slices or crops folder at `root` (`mode` detected from its table when None)."""
    found = detect_mode(root, mode)
    return (SliceFolder if found == SLICES else CropFolder).open(root, truth=truth)


def mode_of(folder: Folder) -> str:
    """`slices` or `crops`."""
    return SLICES if isinstance(folder, SliceFolder) else CROPS


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """A PNG as uint8 `(rows, cols)` (`channels=1`, grey) or `(channels, rows, cols)` (RGB)."""
    try:
        with Image.open(path) as image:
            if channels == 1:
                return np.asarray(image.convert("L"), dtype=np.uint8)
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[:channels])


def image_shape(path: str | Path) -> tuple[int, int]:
    """`(rows, cols)` of an image, from its header only."""
    try:
        with Image.open(path) as image:
            cols, rows = image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    return rows, cols


def wide_labels(studies: list[int], targets, severities) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """`study_id` + the 25 `TARGET_COLUMNS` (object, NaN blank) from `(study, condition, level)`
    triples and their snake_case severities."""
    table = pd.DataFrame(np.nan, index=pd.Index(studies, name="study_id"), columns=TARGET_COLUMNS)
    table = table.astype(object)
    for (study, condition, level), severity in zip(targets, severities):
        if isinstance(severity, str):
            table.loc[int(study), f"{condition}_{level}"] = severity
    return table.reset_index()


def read_table(
    path: Path,
    columns: tuple[str, ...],
    *,
    ints: tuple[str, ...] = (),
    floats: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Only `columns` of the CSV at `path` (`usecols`), as text except `ints` (int64) and `floats`
    (float64, blank NaN). DataError for a missing file or column, or a bad number."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        header = [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        frame = pd.read_csv(
            path, usecols=list(columns), dtype=str, keep_default_na=False, na_values=[""]
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable CSV ({reason})") from None
    frame = frame[list(columns)]
    for column in (*ints, *floats):
        numbers = pd.to_numeric(frame[column].str.strip(), errors="coerce")
        bad = numbers.isna() & (frame[column].notna() | (column in ints))
        if column in ints:
            bad |= numbers.notna() & (numbers != np.round(numbers))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column {column} must hold {'integers' if column in ints else 'numbers'};"
                f" row {row + 2} has {frame[column].iloc[row]!r}"
            )
        frame[column] = numbers.astype(np.int64 if column in ints else np.float64)
    return frame


def _severities(values: pd.Series, path: Path) -> pd.Series:
    """`Normal/Mild` ... -> snake_case, blank -> NaN; DataError naming an unknown value."""

    def convert(value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            return np.nan
        try:
            return severity_from_label(value)
        except ValueError as exc:
            raise DataError(f"{path}: {exc}") from None

    return values.map(convert).astype(object)


def _check_names(frame: pd.DataFrame, column: str, allowed: tuple[str, ...], path: Path) -> None:
    bad = ~frame[column].isin(allowed)
    if bad.any():
        raise DataError(
            f"{path}: unknown {column} {frame.loc[bad, column].iloc[0]!r}; "
            f"expected one of {', '.join(allowed)}"
        )


def _check_duplicates(frame: pd.DataFrame, key: list[str], path: Path) -> None:
    dup = frame.duplicated(key)
    if dup.any():
        row = frame[dup].iloc[0]
        raise DataError(
            f"{path}: {int(dup.sum())} repeated row(s) of {', '.join(key)}, e.g. "
            + ", ".join(f"{k} {row[k]}" for k in key)
        )


def _check_files(root: Path, files: pd.Series, table: str) -> None:
    absent = [f for f in files if not (root / f).is_file()]
    if absent:
        raise DataError(
            f"{root / absent[0]}: listed in {root / table} but absent"
            + (f" ({len(absent)} files are)" if len(absent) > 1 else "")
        )
