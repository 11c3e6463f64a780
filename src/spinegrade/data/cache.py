"""The preprocessed study cache: each study's DICOM read once into one `.npz`, loaded back as
`Study`.

Both stages read studies many times (every epoch, every fold, evaluation); decoding DICOM each time
would dominate. `cache_studies` reads the studies in parallel worker processes (with a progress bar)
and writes `<cache_dir>/<study_id>.npz` atomically. Each file stores the *full* volumes (integer
pixels, affine, instance numbers, series metadata) exactly as `load_study` returns them, so any
stage can crop or resample what it needs from the cache; nothing stage-specific is baked in.

A file is reused only when its key matches: a hash of the cache format version, the study's series
types (from the descriptions table) and the (relative path, size, mtime) of every file under the
study folder. A changed, added or removed file, or a re-labelled series, rebuilds the entry.
Layout of one file (uncompressed npz, loads in milliseconds):
`key` (str), `index` (JSON: study_id, path, series -> [{series_id, series_type, description,
stacks: [meta...]}]), and per stack `s{i}_{j}_pixels`, `s{i}_{j}_affine`, `s{i}_{j}_instances`,
`s{i}_{j}_sop_uids` and `s{i}_{j}_sop_classes` (unicode arrays: the slices' SOPInstanceUID and
SOPClassUID, which a DICOM SR written from a cached study refers to).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from spinegrade.dicom import Series, Study, Volume, load_study
from spinegrade.dicom.geometry import SeriesMeta
from spinegrade.errors import DataError, SpinegradeError
from spinegrade.io import write_with

#: Bump when the file layout changes: every entry is then rebuilt.
#: 2: each stack keeps its slices' SOPInstanceUID and SOPClassUID; series typed by
#: dicom.study.series_from_stacks with pixel contrast
CACHE_VERSION = 3


@dataclass
class CacheResult:
    """Outcome of :func:`cache_studies`: cache file per study, and why the others failed."""

    paths: dict[int, Path] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    built: int = 0  #: entries (re)written in this call; the rest were reused


def cache_path(cache_dir: str | Path, study_id: int) -> Path:
    """`<cache_dir>/<study_id>.npz`."""
    return Path(cache_dir) / f"{int(study_id)}.npz"


def study_key(study_dir: str | Path, series_descriptions: pd.DataFrame | None = None) -> str:
    """Fingerprint of a study folder's files (relative path, size, mtime) and its series types."""
    study_dir = Path(study_dir)
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for path in sorted(study_dir.rglob("*")):
        if path.is_file():
            st = path.stat()
            h.update(f"{path.relative_to(study_dir)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    if series_descriptions is not None:
        rows = series_descriptions.sort_values("series_id")
        h.update(rows[["series_id", "series_description"]].to_csv(index=False).encode())
    return h.hexdigest()


def save_study(study: Study, path: str | Path, key: str = "") -> Path:
    """Write `study` atomically to the npz `path` (see module docstring for the layout)."""
    arrays: dict[str, np.ndarray] = {}
    index = {
        "study_id": study.study_id,
        "path": str(study.path),
        "skipped": list(study.skipped),
        "series": [],
    }
    for i, series in enumerate(study.series):
        stacks = []
        for j, vol in enumerate(series.stacks):
            arrays[f"s{i}_{j}_pixels"] = vol.pixels
            arrays[f"s{i}_{j}_affine"] = vol.affine
            arrays[f"s{i}_{j}_instances"] = vol.instance_numbers
            arrays[f"s{i}_{j}_sop_uids"] = np.array(vol.sop_instance_uids, dtype=str)
            arrays[f"s{i}_{j}_sop_classes"] = np.array(vol.sop_class_uids, dtype=str)
            stacks.append(
                {
                    k: (str(v) if isinstance(v, Path) else v)
                    for k, v in dataclasses.asdict(vol.meta).items()
                }
            )
        index["series"].append(
            {
                "series_id": series.series_id,
                "series_type": series.series_type,
                "description": series.description,
                "note": series.note,
                "stacks": stacks,
            }
        )
    arrays["key"] = np.array(key)
    arrays["index"] = np.array(json.dumps(index))
    return write_with(path, lambda tmp: np.savez(tmp, **arrays))


def load_cached(path: str | Path) -> Study:
    """Read one cache file back into a `Study` (raises DataError when missing or unreadable)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            index = json.loads(str(npz["index"]))
            series = []
            for i, s in enumerate(index["series"]):
                stacks = []
                for j, meta in enumerate(s["stacks"]):
                    meta = dict(
                        meta, path=Path(meta["path"]), pixel_spacing=tuple(meta["pixel_spacing"])
                    )
                    stacks.append(
                        Volume(
                            pixels=npz[f"s{i}_{j}_pixels"],
                            affine=npz[f"s{i}_{j}_affine"],
                            instance_numbers=npz[f"s{i}_{j}_instances"],
                            meta=SeriesMeta(**meta),
                            sop_instance_uids=_strings(npz[f"s{i}_{j}_sop_uids"]),
                            sop_class_uids=_strings(npz[f"s{i}_{j}_sop_classes"]),
                        )
                    )
                series.append(
                    Series(
                        series_id=s["series_id"],
                        series_type=s["series_type"],
                        description=s["description"],
                        stacks=stacks,
                        note=s["note"],
                    )
                )
    except FileNotFoundError:
        raise DataError(f"{path}: cache file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable cache file ({type(exc).__name__}: {exc})") from None
    return Study(
        study_id=index["study_id"],
        path=Path(index["path"]),
        series=series,
        skipped=index["skipped"],
    )


def _strings(array: np.ndarray) -> tuple[str, ...]:
    return tuple(str(v) for v in array)


def cached_key(path: str | Path) -> str | None:
    """The key stored in a cache file, or None when the file is absent or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return str(npz["key"])
    except (OSError, ValueError, KeyError):
        return None


def cache_studies(
    images_dir: str | Path,
    study_ids: list[int],
    cache_dir: str | Path,
    series_descriptions: pd.DataFrame | None = None,
    *,
    workers: int = 0,
    progress: bool = True,
) -> CacheResult:
    """Make sure `<cache_dir>/<id>.npz` is current for every study in `images_dir/<id>/`.

    Studies whose entry is up to date are reused; the others are read with `load_study` in
    `workers` processes (0 = in this process). A study that cannot be read is skipped and its
    one-line reason recorded in `failed`; the rest are still cached.
    """
    images_dir, cache_dir = Path(images_dir), Path(cache_dir)
    result = CacheResult()
    todo: list[tuple[int, Path, pd.DataFrame | None, str]] = []
    for sid in map(int, study_ids):
        study_dir = images_dir / str(sid)
        if not study_dir.is_dir():
            result.failed[sid] = f"{study_dir}: study folder not found"
            continue
        desc = (
            None
            if series_descriptions is None
            else series_descriptions[series_descriptions["study_id"] == sid]
        )
        key = study_key(study_dir, desc)
        if cached_key(cache_path(cache_dir, sid)) == key:
            result.paths[sid] = cache_path(cache_dir, sid)
        else:
            todo.append((sid, study_dir, desc, key))
    jobs = [(sid, d, desc, key, cache_dir) for sid, d, desc, key in todo]
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, os.cpu_count() or 1)) as pool:
            outcomes = pool.map(_cache_one, jobs)
            _collect(
                result, tqdm(outcomes, total=len(jobs), desc="cache studies", disable=not progress)
            )
    else:
        _collect(
            result,
            tqdm(
                map(_cache_one, jobs), total=len(jobs), desc="cache studies", disable=not progress
            ),
        )
    return result


def _collect(result: CacheResult, outcomes) -> None:  # type: ignore[no-untyped-def]
    for sid, path, error in outcomes:
        if error is None:
            result.paths[sid] = path
            result.built += 1
        else:
            result.failed[sid] = error


def _cache_one(
    job: tuple[int, Path, pd.DataFrame | None, str, Path],
) -> tuple[int, Path | None, str | None]:
    sid, study_dir, desc, key, cache_dir = job
    try:
        study = load_study(study_dir, desc)
        return sid, save_study(study, cache_path(cache_dir, sid), key), None
    except SpinegradeError as exc:
        return sid, None, str(exc)
