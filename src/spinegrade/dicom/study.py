"""A study folder: its series, their types, and the axial slice nearest to a world point."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from spinegrade.constants import AXIAL_T2, SAGITTAL_T1, SAGITTAL_T2, SERIES_TYPES
from spinegrade.dicom.geometry import Volume
from spinegrade.dicom.series import load_many, load_stacks
from spinegrade.errors import DicomError

#: A unit normal counts as along an LPS axis when that component's magnitude exceeds this (~35 deg).
AXIS_COS = 0.8


@dataclass(frozen=True, eq=False)
class Series:
    """One series folder: its type (one of SERIES_TYPES, or None when unknown) and its stacks."""

    series_id: int | None
    series_type: str | None
    description: str
    stacks: list[Volume]
    note: str = ""  #: how the type was decided, or why it is unknown


@dataclass(frozen=True, eq=False)
class Study:
    """A study folder's usable series; `skipped` holds one line per series that could not be read."""

    study_id: int | None
    path: Path
    series: list[Series]
    skipped: list[str] = field(default_factory=list)

    def of_type(self, series_type: str) -> list[Series]:
        """The series of this type, in series-folder order."""
        return [s for s in self.series if s.series_type == series_type]

    def first(self, series_type: str) -> Series | None:
        """The first series of this type, or None."""
        found = self.of_type(series_type)
        return found[0] if found else None

    def axial_stacks(self) -> list[tuple[int | None, Volume]]:
        """(series_id, stack) of every stack of every Axial T2 series."""
        return [(s.series_id, v) for s in self.of_type(AXIAL_T2) for v in s.stacks]


@dataclass(frozen=True)
class AxialHit:
    """Where a world point falls in the axial series: slice, and pixel (col, row) in that slice."""

    series_id: int | None
    stack_index: int  #: index of the stack within its series' `stacks`
    slice_index: int
    instance_number: int
    distance_mm: float  #: distance of the point from the slice plane, along the normal
    col: float
    row: float


def load_study(
    study_dir: str | Path, series_descriptions: pd.DataFrame | None = None, *, workers: int = 0
) -> Study:
    """Read every series subfolder of a study (RSNA layout `<study_id>/<series_id>/*.dcm`).

    The type of a series comes from `series_descriptions` (columns study_id, series_id,
    series_description) when it lists the series, else from the DICOM SeriesDescription, else from
    the geometry and contrast (`classify_series`). Unreadable series are skipped (see
    `Study.skipped`); a study with no readable series raises DicomError. `workers > 0` reads
    series in a process pool.
    """
    folder = Path(study_dir)
    if not folder.is_dir():
        raise DicomError(folder, "study folder does not exist" if not folder.exists() else "not a folder")
    dirs = sorted((d for d in folder.iterdir() if d.is_dir()), key=lambda d: (not d.name.isdigit(), _num(d.name), d.name))
    study_id = _num(folder.name)
    table = _table_types(series_descriptions, study_id)
    series, skipped = [], []
    for d, loaded in zip(dirs, load_many(dirs, workers=workers, progress=False)):
        if isinstance(loaded, DicomError):
            skipped.append(str(loaded))
            continue
        series.append(series_from_stacks(_num(d.name), loaded, table))
    if not series:
        why = "; ".join(skipped) if skipped else "no series subfolders"
        raise DicomError(folder, f"no usable series in the study ({why})")
    return Study(study_id=study_id, path=folder, series=series, skipped=skipped)


def series_from_stacks(series_id: int | None, stacks: list[Volume], table: dict[int, str] | None = None) -> Series:
    """A `Series` of loaded stacks, typed as `load_study` does: from `table` (series_id ->
    description) if it lists the series, else from the DICOM SeriesDescription, else `classify_series`."""
    table = table or {}
    description = stacks[0].meta.description
    if series_id in table and (t := series_type_from_description(table[series_id])) is not None:
        return Series(series_id, t, description, stacks, note="type from the series descriptions table")
    if (t := series_type_from_description(description)) is not None:
        return Series(series_id, t, description, stacks, note="type from DICOM SeriesDescription")
    t = classify_series(max(stacks, key=lambda v: v.shape[0]))
    note = "type from geometry and contrast" if t else f"unknown type (description {description!r}, geometry unclear)"
    return Series(series_id, t, description, stacks, note=note)


_make_series = series_from_stacks  # the old private name, still imported elsewhere


def _table_types(table: pd.DataFrame | None, study_id: int | None) -> dict[int, str]:
    """series_id -> description for this study from the descriptions table."""
    if table is None or study_id is None:
        return {}
    missing = {"study_id", "series_id", "series_description"} - set(table.columns)
    if missing:
        raise DicomError("series_descriptions", f"table lacks column(s) {sorted(missing)}")
    rows = table[table["study_id"].astype("int64") == study_id]
    return {int(s): str(d) for s, d in zip(rows["series_id"], rows["series_description"])}


def series_type_from_description(text: str | None) -> str | None:
    """Map a series description ('SAG T1', 'Sagittal T2/STIR', 'STIR', 'AX T2', ...) to SERIES_TYPES.

    Returns None when the text does not say (e.g. 'Localizer', 'AX T1', '').
    """
    if not text:
        return None
    for t in SERIES_TYPES:
        if text.strip().lower() == t.lower():
            return t
    words = set(re.findall(r"t\d|[a-z]+", text.lower().replace("_", " ")))
    sagittal = bool(words & {"sag", "sagittal", "sagital"})
    axial = bool(words & {"ax", "axial", "tra", "transverse", "transversal"})
    t1, t2, stir = "t1" in words, "t2" in words, bool(words & {"stir", "tirm"})
    if axial and not sagittal:
        return AXIAL_T2 if t2 or not t1 else None
    if sagittal or stir:
        if stir or (t2 and not t1):
            return SAGITTAL_T2
        if t1 and not t2:
            return SAGITTAL_T1
    return None


def classify_series(volume: Volume) -> str | None:
    """Series type from geometry (and contrast for sagittal stacks), or None when unclear.

    Normal mostly along LPS z -> Axial T2 (the only axial type of the task). Normal mostly along x
    -> sagittal; T1 vs T2/STIR from the acquisition: an InversionTime of 100-250 ms (STIR) or
    EchoTime >= 60 ms -> Sagittal T2/STIR; EchoTime < 40 ms and RepetitionTime < 1500 ms ->
    Sagittal T1; otherwise None: a wrong guess would feed the wrong model, so unknown stays unknown.
    Coronal or oblique-in-between stacks -> None.
    """
    n = np.abs(volume.normal)
    if n[2] >= AXIS_COS:
        return AXIAL_T2
    if n[0] < AXIS_COS:
        return None
    m = volume.meta
    if (m.inversion_time is not None and 100 <= m.inversion_time <= 250) or (m.echo_time or 0) >= 60:
        return SAGITTAL_T2
    if m.echo_time is not None and m.echo_time < 40 and m.repetition_time is not None and m.repetition_time < 1500:
        return SAGITTAL_T1
    return None


def nearest_axial_slice(study: Study, point_lps: npt.ArrayLike) -> AxialHit | None:
    """The axial slice (over all axial stacks of the study) whose plane is nearest the point.

    Stacks whose extent holds the point (its projection within the image and within half a slice
    spacing of the first/last slice) are preferred; among those (or among all when none holds it)
    the smallest distance along the stack's normal wins. None when the study has no axial stack.
    """
    point = np.asarray(point_lps, dtype=np.float64).reshape(3)
    best: tuple[tuple[bool, float], AxialHit] | None = None
    for s in study.of_type(AXIAL_T2):
        for k, vol in enumerate(s.stacks):
            hit, inside = _hit_in_stack(vol, point, s.series_id, k)
            key = (not inside, hit.distance_mm)
            if best is None or key < best[0]:
                best = (key, hit)
    return None if best is None else best[1]


def _hit_in_stack(vol: Volume, point: np.ndarray, series_id: int | None, stack_index: int) -> tuple[AxialHit, bool]:
    """The nearest slice of one stack to `point`, and whether the stack's extent holds the point."""
    n_slices, rows, cols = vol.shape
    s = float(vol.world_to_voxel(point[None])[0, 2])
    k = int(np.clip(np.rint(s), 0, n_slices - 1))
    origin = vol.voxel_to_world([[0.0, 0.0, k]])[0]
    r, c, n = vol.orientation.T
    dx, dy, _ = vol.spacing
    col, row = float((point - origin) @ r / dx), float((point - origin) @ c / dy)
    inside = -0.5 <= s <= n_slices - 0.5 and -0.5 <= col <= cols - 0.5 and -0.5 <= row <= rows - 0.5
    hit = AxialHit(series_id, stack_index, k, int(vol.instance_numbers[k]), float(abs((point - origin) @ n)), col, row)
    return hit, inside


def _num(name: str) -> int | None:
    return int(name) if name.isdigit() else None


def describe(path: str | Path, *, workers: int = 0) -> tuple[list[dict[str, str]], list[str]]:
    """One row per stack of a study folder, or of a series folder (one holding .dcm files).

    Returns (rows, skipped): rows with keys series, type, stack, slices, size, spacing_mm, normal,
    instances, note (all strings, for printing); skipped = unreadable series of a study.
    """
    folder = Path(path)
    if folder.is_dir() and any(p.suffix.lower() == ".dcm" for p in folder.iterdir()):
        stacks = load_stacks(folder, workers=workers)
        series, skipped = [series_from_stacks(stacks[0].meta.series_id, stacks)], []
    else:
        study = load_study(folder, workers=workers)
        series, skipped = study.series, study.skipped
    rows = []
    for s in series:
        for k, v in enumerate(s.stacks):
            rows.append({
                "series": str(s.series_id), "type": s.series_type or "?", "stack": str(k),
                "slices": str(v.shape[0]), "size": f"{v.shape[1]}x{v.shape[2]}",
                "spacing_mm": "{:.3g}, {:.3g}, {:.3g}".format(*v.spacing),
                "normal": "{:+.2f}, {:+.2f}, {:+.2f}".format(*v.normal),
                "instances": f"{v.instance_numbers[0]}..{v.instance_numbers[-1]}",
                "note": s.note or s.description,
            })
    return rows, skipped
