"""Loading a series folder into spatially consistent stacks (`Volume`s).

Slices are sorted by their position along the slice normal, dot(IPP, n), never by file name or
InstanceNumber, and split into stacks where the geometry stops being one regular block.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from spinegrade.dicom.geometry import SeriesMeta, Volume, make_affine
from spinegrade.dicom.headers import SliceHeader, list_dicom_files, map_files, read_slice
from spinegrade.errors import DicomError

#: Max abs difference of ImageOrientationPatient components within one stack.
ORIENTATION_TOL = 1e-3
#: Max difference of PixelSpacing (mm) within one stack.
SPACING_TOL = 1e-3
#: A step along the normal continues a stack when it lies in (LOW, HIGH] x the median step.
STEP_LOW, STEP_HIGH = 0.5, 1.5
#: Positions closer than this (mm) along the normal count as repeats.
REPEAT_MM = 1e-3

Slice = tuple[SliceHeader, np.ndarray]


def load_stacks(series_dir: str | Path, *, workers: int = 0) -> list[Volume]:
    """All stacks of a series folder, each a `Volume` sorted along its normal.

    Files are read once (header and pixels together); `workers > 0` reads them in a process pool.
    A new stack starts at a different ImageOrientationPatient (> ORIENTATION_TOL), image size or
    PixelSpacing, and where the step along the normal leaves (0.5, 1.5] x the median step (a gap,
    or a repeated position: overlapping blocks are told apart by the nearest InstanceNumber).
    Stacks are returned ordered by the position of their centre along their own normal.
    """
    folder = Path(series_dir)
    slices = map_files(read_slice, list_dicom_files(folder), workers)
    return build_stacks(slices, folder)


def load_series(series_dir: str | Path, *, workers: int = 0) -> Volume:
    """The single stack of a series folder; DicomError if it holds several (use `load_stacks`)."""
    stacks = load_stacks(series_dir, workers=workers)
    if len(stacks) != 1:
        sizes = ", ".join(str(v.shape[0]) for v in stacks)
        raise DicomError(
            series_dir, f"series holds {len(stacks)} stacks ({sizes} slices); use load_stacks"
        )
    return stacks[0]


def load_many(
    series_dirs: Sequence[str | Path], *, workers: int = 0, progress: bool = True
) -> list[list[Volume] | DicomError]:
    """`load_stacks` of many series, in a process pool over series when `workers > 0`.

    A bad series does not stop the batch: its slot holds the `DicomError` instead of its stacks.
    """
    dirs = [Path(d) for d in series_dirs]
    bar = dict(total=len(dirs), desc="series", unit="series", disable=not progress)
    if workers <= 0 or len(dirs) < 2:
        return [_load_or_error(d) for d in tqdm(dirs, **bar)]
    with ProcessPoolExecutor(max_workers=min(workers, len(dirs), os.cpu_count() or 1)) as pool:
        return list(tqdm(pool.map(_load_or_error, dirs), **bar))


def _load_or_error(folder: Path) -> list[Volume] | DicomError:
    try:
        return load_stacks(folder)
    except DicomError as exc:
        return exc


def build_stacks(slices: Sequence[Slice], folder: Path) -> list[Volume]:
    """Split read slices (header, stored pixels (rows, cols)) into sorted `Volume`s."""
    stacks = [
        stack
        for group in _group_by_frame([h for h, _ in slices])
        for stack in _split_group(slices, group)
    ]
    volumes = [_to_volume([slices[i] for i in idx], folder) for idx in stacks]
    return sorted(
        volumes, key=lambda v: float(v.voxel_to_world([[0, 0, (v.shape[0] - 1) / 2]])[0] @ v.normal)
    )


def _group_by_frame(headers: Sequence[SliceHeader]) -> list[list[int]]:
    """Indices of headers sharing orientation, image size and pixel spacing (within tolerance)."""
    groups: list[list[int]] = []
    for i, h in enumerate(headers):
        for group in groups:
            g = headers[group[0]]
            if (
                (h.rows, h.cols) == (g.rows, g.cols)
                and np.max(np.abs(h.orientation - g.orientation)) <= ORIENTATION_TOL
                and max(abs(a - b) for a, b in zip(h.pixel_spacing, g.pixel_spacing)) <= SPACING_TOL
            ):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _split_group(slices: Sequence[Slice], group: list[int]) -> list[list[int]]:
    """Split one frame group into regular runs along the normal (indices into `slices`)."""
    normal = slices[group[0]][0].normal
    pos = {i: float(slices[i][0].position @ normal) for i in group}
    inst = {i: slices[i][0].instance_number or 0 for i in group}
    order = sorted(group, key=lambda i: (pos[i], inst[i]))
    steps = np.diff([pos[i] for i in order])
    steps = steps[steps > REPEAT_MM]
    if len(steps) == 0:  # one slice, or every slice at the same position
        return [[i] for i in order]
    median = float(np.median(steps))
    stacks: list[list[int]] = []
    for i in order:
        fits = [s for s in stacks if STEP_LOW * median < pos[i] - pos[s[-1]] <= STEP_HIGH * median]
        if fits:
            min(fits, key=lambda s: abs(inst[i] - inst[s[-1]])).append(i)
        else:
            stacks.append([i])
    return stacks


def _to_volume(stack: Sequence[Slice], folder: Path) -> Volume:
    """One sorted stack of slices as a Volume (rescale applied, affine from the real positions)."""
    headers = [h for h, _ in stack]
    first = headers[0]
    if len(stack) > 1:
        step = (headers[-1].position - first.position) / (len(stack) - 1)
    else:
        step = first.normal * (first.slice_thickness or 1.0)
    meta = SeriesMeta(
        study_uid=first.study_uid,
        series_uid=first.series_uid,
        series_id=int(folder.name) if folder.name.isdigit() else None,
        description=first.description,
        rows=first.rows,
        cols=first.cols,
        pixel_spacing=first.pixel_spacing,
        slice_thickness=first.slice_thickness,
        manufacturer=first.manufacturer,
        path=folder,
        echo_time=first.echo_time,
        repetition_time=first.repetition_time,
        inversion_time=first.inversion_time,
        scanning_sequence=first.scanning_sequence,
        sequence_name=first.sequence_name,
    )
    return Volume(
        pixels=rescale(
            [p for _, p in stack],
            [h.rescale_slope for h in headers],
            [h.rescale_intercept for h in headers],
        ),
        affine=make_affine(first.position, first.orientation, first.pixel_spacing, step),
        instance_numbers=np.array(
            [-1 if h.instance_number is None else h.instance_number for h in headers],
            dtype=np.int64,
        ),
        meta=meta,
        sop_instance_uids=tuple(h.sop_instance_uid for h in headers),
        sop_class_uids=tuple(h.sop_class_uid for h in headers),
    )


def rescale(
    raw: Sequence[np.ndarray], slopes: Sequence[float], intercepts: Sequence[float]
) -> np.ndarray:
    """Stack stored slices (rows, cols) into (slices, rows, cols) and apply per-slice rescale.

    Identity rescale keeps the stored dtype; integral slopes/intercepts give the smallest of
    uint16/int16/int32 that holds the values; anything else gives float32 (never float64).
    """
    stack = np.stack(raw)
    slope = np.asarray(slopes, dtype=np.float64)[:, None, None]
    intercept = np.asarray(intercepts, dtype=np.float64)[:, None, None]
    if np.all(slope == 1) and np.all(intercept == 0):
        return stack
    if np.all(slope == np.round(slope)) and np.all(intercept == np.round(intercept)):
        out = stack.astype(np.int64) * slope.astype(np.int64) + intercept.astype(np.int64)
        lo, hi = int(out.min()), int(out.max())
        for dtype in (np.uint16, np.int16, np.int32):
            if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
                return out.astype(dtype)
        return out
    return (
        stack.astype(np.float32) * slope.astype(np.float32) + intercept.astype(np.float32)
    ).astype(np.float32)
