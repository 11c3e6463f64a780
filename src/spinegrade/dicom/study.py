"""A study folder: its series, their types, and the slice of a series type nearest a world point."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from spinegrade.constants import AXIAL_T2, SAGITTAL_T1, SAGITTAL_T2, SERIES_TYPES
from spinegrade.dicom.contrast import (
    AXIAL,
    FADE_GAP,
    FADE_T1,
    FADE_T2,
    LATERAL_MM,
    SAGITTAL,
    T1,
    T2,
    contrast_from_tags,
    midline_fade,
    read_description,
)
from spinegrade.dicom.geometry import Volume
from spinegrade.dicom.series import load_many, load_stacks
from spinegrade.errors import DicomError

#: The series type of each (plane, contrast); other pairs (T1 axial) are not ours.
_TYPES = {(SAGITTAL, T1): SAGITTAL_T1, (SAGITTAL, T2): SAGITTAL_T2, (AXIAL, T2): AXIAL_T2}


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
    """A study folder's usable series; `skipped` holds one line per series that could not be
    read."""

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

    def find_instance(self, series_id: int, instance_number: int) -> tuple[int, int] | None:
        """`(stack index, slice index)` of the slice with this InstanceNumber in that series, or
        None when the study has no such series or instance."""
        for series in self.series:
            if series.series_id == series_id:
                for k, volume in enumerate(series.stacks):
                    hits = np.flatnonzero(volume.instance_numbers == int(instance_number))
                    if len(hits):
                        return k, int(hits[0])
        return None


@dataclass(frozen=True)
class SliceHit:
    """Where a world point falls in a series type's stacks: slice, and pixel (col, row) in it."""

    series_id: int | None
    stack_index: int  #: index of the stack within its series' `stacks`
    slice_index: int
    instance_number: int
    distance_mm: float  #: distance of the point from the slice plane, along the normal
    col: float
    row: float
    volume: Volume  #: the stack itself
    in_image: bool  #: the point's projection onto the slice lies within the image


def load_study(
    study_dir: str | Path, series_descriptions: pd.DataFrame | None = None, *, workers: int = 0
) -> Study:
    """Read every series subfolder of a study (RSNA layout `<study_id>/<series_id>/*.dcm`).

    Series are typed by `series_from_stacks`, with `series_descriptions` (columns study_id,
    series_id, series_description) as the table. Unreadable series are skipped (see
    `Study.skipped`); a study with no readable series raises DicomError. `workers > 0` reads
    series in a process pool.
    """
    folder = Path(study_dir)
    if not folder.is_dir():
        raise DicomError(
            folder, "study folder does not exist" if not folder.exists() else "not a folder"
        )
    dirs = sorted(
        (d for d in folder.iterdir() if d.is_dir()),
        key=lambda d: (not d.name.isdigit(), _num(d.name), d.name),
    )
    study_id = _num(folder.name)
    loaded, skipped = [], []
    for d, stacks in zip(dirs, load_many(dirs, workers=workers, progress=False)):
        if isinstance(stacks, DicomError):
            skipped.append(str(stacks))
        else:
            loaded.append((_num(d.name), stacks))
    if not loaded:
        why = "; ".join(skipped) if skipped else "no series subfolders"
        raise DicomError(folder, f"no usable series in the study ({why})")
    series = series_from_stacks(loaded, _table_types(series_descriptions, study_id))
    return Study(study_id=study_id, path=folder, series=series, skipped=skipped)


def series_from_stacks(
    loaded: Sequence[tuple[int | None, Sequence[Volume]]], table: Mapping[int, str] | None = None
) -> list[Series]:
    """The typed `Series` of a study's loaded series, `(series_id, stacks)` each: the one place
    where series types are decided.

    For each series the first evidence that speaks decides:

    1. `table` (series_id -> description: the RSNA descriptions table), when it lists the series;
    2. the plane of the geometry (that of the stacks' normals, oblique stacks aside; coronal or
       oblique series, and series with stacks in several planes, are not ours) with the
       contrast from the SeriesDescription (`contrast.read_description`); where the description
       names another plane, the geometry decides. Descriptions of localizers, contrast-enhanced,
       proton-density or diffusion series rule the series out;
    3. else the contrast from the acquisition tags (`contrast.contrast_from_tags`); tags that are
       there but fit neither contrast leave the type unknown;
    4. else, for a sagittal series, the pixel contrast (`contrast.midline_fade`); an axial series
       with no contrast evidence is Axial T2 by its plane alone, and its note says so.

    A T1 axial series is not ours. Two sagittal series typed, or left unknown, by their pixels,
    at least one of them weakly, are typed relative to each other when their fades differ by
    FADE_GAP or more. Each Series' `note` says what decided, or why the type is unknown.
    """
    decisions = [_decide(sid, list(stacks), table or {}) for sid, stacks in loaded]
    return [d.series for d in _relative(decisions)]


@dataclass(frozen=True)
class _Decision:
    """One series' type, and its midline fade when its pixels decided (or left it unknown)."""

    series: Series
    fade: float | None = None
    weak: bool = False  #: the fade lies between FADE_T1 and FADE_T2


def _decide(series_id: int | None, stacks: list[Volume], table: Mapping[int, str]) -> _Decision:
    """A series typed from its own evidence (steps 1-4 of `series_from_stacks`)."""
    main = max(stacks, key=lambda v: v.shape[0])
    description = main.meta.description

    def done(t: str | None, note: str, fade: float | None = None, weak: bool = False) -> _Decision:
        return _Decision(Series(series_id, t, description, stacks, note), fade, weak)

    if series_id in table and (t := series_type_from_description(table[series_id])) is not None:
        return done(t, f"series descriptions table: {table[series_id]!r}")
    planes = sorted(
        {v.plane for v in stacks} - {"oblique", "unknown"}
    )  # oblique stacks go with the others
    if len(planes) > 1:
        several = ", ".join(planes)
        return done(None, f"unknown type: stacks in several planes ({several}), a localizer?")
    plane = planes[0] if planes else None
    words = read_description(description)
    if words.excluded:
        return done(
            None, f"unknown type: description {description!r} names {words.excluded} series"
        )
    if plane not in (SAGITTAL, AXIAL):
        normal = "{:+.2f}, {:+.2f}, {:+.2f}".format(*np.round(main.normal, 2) + 0.0)  # no -0.00
        return done(None, f"unknown type: {plane or 'oblique'} geometry (normal {normal})")
    clash = ""
    if words.plane and words.plane != plane:
        clash = (
            f"; the description names {words.plane}, the geometry is {plane}: the geometry decides"
        )
    if words.contrast:
        evidence = f"description {description!r} + {plane} geometry{clash}"
        return done(*_typed(plane, words.contrast, evidence))
    contrast, evidence = contrast_from_tags(main.meta)
    if evidence:
        if contrast is None:
            return done(None, f"unknown type: {evidence}{clash}")
        return done(*_typed(plane, contrast, evidence + clash))
    if plane == AXIAL:
        return done(
            AXIAL_T2,
            "axial geometry, no contrast in the description or tags (none is "
            f"read from axial pixels): Axial T2, the only axial type{clash}",
        )
    return done(*_by_pixels(main, clash))


def _by_pixels(sagittal: Volume, clash: str) -> tuple[str | None, str, float | None, bool]:
    """(type, note, midline fade, weak) of a sagittal stack from its pixels (step 4)."""
    fade = midline_fade(sagittal)
    if fade is None:
        note = (
            "unknown type: no contrast in the description or tags, and the sagittal stack "
            f"does not reach {LATERAL_MM:g} mm to both sides of its midline"
        )
        return None, note, None, False
    if fade >= FADE_T2:
        return (
            SAGITTAL_T2,
            (
                f"pixel contrast: midline fade {fade:.2f} >= {FADE_T2:.2f} (the "
                f"brightest tissue is midline CSF){clash}"
            ),
            fade,
            False,
        )
    if fade <= FADE_T1:
        return (
            SAGITTAL_T1,
            (
                f"pixel contrast: midline fade {fade:.2f} <= {FADE_T1:.2f} (the "
                f"brightest tissue continues laterally){clash}"
            ),
            fade,
            False,
        )
    return (
        None,
        (
            f"unknown type: pixel contrast weak, midline fade {fade:.2f} between "
            f"{FADE_T1:.2f} and {FADE_T2:.2f}{clash}"
        ),
        fade,
        True,
    )


def _typed(plane: str, contrast: str, evidence: str) -> tuple[str | None, str]:
    """(series type, note) of a plane and contrast; a pair that is not ours (T1 axial) -> None."""
    series_type = _TYPES.get((plane, contrast))
    if series_type is None:
        return None, f"unknown type: {evidence}; a {contrast} {plane} series is not one of ours"
    return series_type, evidence


def _relative(decisions: list[_Decision]) -> list[_Decision]:
    """Type two pixel-judged sagittal series (one at least weakly) against each other."""
    judged = [i for i, d in enumerate(decisions) if d.fade is not None]
    if len(judged) != 2 or not any(decisions[i].weak for i in judged):
        return decisions
    fades = {i: float(decisions[i].fade) for i in judged}  # type: ignore[arg-type]
    low, high = sorted(judged, key=fades.__getitem__)
    if fades[high] - fades[low] < FADE_GAP:
        return decisions
    a, b = decisions[low], decisions[high]
    out = list(decisions)
    for i, d, series_type, other in ((low, a, SAGITTAL_T1, b), (high, b, SAGITTAL_T2, a)):
        if d.weak:
            note = (
                f"pixel contrast relative to series {other.series.series_id}: midline fade "
                f"{d.fade:.2f} vs {other.fade:.2f}"
            )
            series = replace(d.series, series_type=series_type, note=note)
            out[i] = replace(d, series=series, weak=False)
    return out


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
    """The type a description names by itself, plane and contrast ('Sagittal T1', 'SAG T1',
    'Sagittal T2/STIR', 'STIR', 'AX T2', 'T2_TSE_TRA'), as the descriptions table does.

    None when the text does not name both (a lone 'STIR' counts as sagittal, as in lumbar
    protocols), or names a pair that is not ours ('AX T1'), or rules the series out ('Localizer').
    """
    if not text:
        return None
    for t in SERIES_TYPES:
        if text.strip().lower() == t.lower():
            return t
    words = read_description(text)
    plane = words.plane or (SAGITTAL if words.stir else None)
    if words.excluded or plane is None or words.contrast is None:
        return None
    return _TYPES.get((plane, words.contrast))


def nearest_axial_slice(study: Study, point_lps: npt.ArrayLike) -> SliceHit | None:
    """`nearest_slice` over the study's Axial T2 stacks."""
    return nearest_slice(study, point_lps, AXIAL_T2)


def nearest_slice(study: Study, point_lps: npt.ArrayLike, series_type: str) -> SliceHit | None:
    """The slice (over all stacks of the study's `series_type` series) whose plane is nearest the
    point (3,) in LPS mm.

    Stacks whose extent holds the point (its projection within the image and within half a slice
    spacing of the first/last slice) are preferred; among those (or among all when none holds it)
    the smallest distance along the stack's normal wins. None when the study has no such stack.
    """
    point = np.asarray(point_lps, dtype=np.float64).reshape(3)
    best: tuple[tuple[bool, float], SliceHit] | None = None
    for s in study.of_type(series_type):
        for k, vol in enumerate(s.stacks):
            hit, inside = _hit_in_stack(vol, point, s.series_id, k)
            key = (not inside, hit.distance_mm)
            if best is None or key < best[0]:
                best = (key, hit)
    return None if best is None else best[1]


def _hit_in_stack(
    vol: Volume, point: np.ndarray, series_id: int | None, stack_index: int
) -> tuple[SliceHit, bool]:
    """The nearest slice of one stack to `point`, and whether the stack's extent holds the point."""
    n_slices, rows, cols = vol.shape
    s = float(vol.world_to_voxel(point[None])[0, 2])
    k = int(np.clip(np.rint(s), 0, n_slices - 1))
    origin = vol.voxel_to_world([[0.0, 0.0, k]])[0]
    r, c, n = vol.orientation.T
    dx, dy, _ = vol.spacing
    col, row = float((point - origin) @ r / dx), float((point - origin) @ c / dy)
    in_image = -0.5 <= col <= cols - 0.5 and -0.5 <= row <= rows - 0.5
    hit = SliceHit(
        series_id,
        stack_index,
        k,
        int(vol.instance_numbers[k]),
        float(abs((point - origin) @ n)),
        col,
        row,
        vol,
        in_image,
    )
    return hit, in_image and -0.5 <= s <= n_slices - 0.5


def _num(name: str) -> int | None:
    return int(name) if name.isdigit() else None


def describe(
    path: str | Path, series_descriptions: pd.DataFrame | None = None, *, workers: int = 0
) -> tuple[list[dict[str, str]], list[str]]:
    """One row per stack of a study folder, or of a series folder (one holding .dcm files).

    Returns (rows, skipped): rows with keys series, type, stack, slices, size, spacing_mm, normal,
    instances, note (all strings, for printing; the note says how the type was decided);
    skipped = unreadable series of a study. `series_descriptions` is the descriptions table.
    """
    folder = Path(path)
    if folder.is_dir() and any(p.suffix.lower() == ".dcm" for p in folder.iterdir()):
        stacks = load_stacks(folder, workers=workers)
        table = _table_types(series_descriptions, _num(folder.parent.name))
        series = series_from_stacks([(stacks[0].meta.series_id, stacks)], table)
        skipped: list[str] = []
    else:
        study = load_study(folder, series_descriptions, workers=workers)
        series, skipped = study.series, study.skipped
    rows = []
    for s in series:
        for k, v in enumerate(s.stacks):
            rows.append(
                {
                    "series": str(s.series_id),
                    "type": s.series_type or "?",
                    "stack": str(k),
                    "slices": str(v.shape[0]),
                    "size": f"{v.shape[1]}x{v.shape[2]}",
                    "spacing_mm": "{:.3g}, {:.3g}, {:.3g}".format(*v.spacing),
                    "normal": "{:+.2f}, {:+.2f}, {:+.2f}".format(*v.normal),
                    "instances": f"{v.instance_numbers[0]}..{v.instance_numbers[-1]}",
                    "note": s.note or s.description,
                }
            )
    return rows, skipped
