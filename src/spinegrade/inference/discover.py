"""Finding the studies in a folder and reading one of them into a `Study`.

Three arrangements are understood (decided by :func:`discover_studies` from the folder itself):

- ``images``: an RSNA images folder (`test_images/` or `train_images/`):
  `<root>/<study>/<series>/<instance>.dcm`; every subfolder is a study.
- ``study``: one study folder: `<root>/<series>/<instance>.dcm`.
- ``loose``: any other arrangement (files directly in the folder, mixed depths, non-numeric
  folders): every file under the folder is read as DICOM and the files are grouped into studies by
  StudyInstanceUID and into series by SeriesInstanceUID. Files that are not DICOM are listed in
  `Discovery.ignored` and skipped.

Study ids. A study folder with a numeric name keeps that name as its `study_id` (the RSNA
convention). Otherwise the id is :func:`uid_to_id` of its StudyInstanceUID: the first 8 hex digits
of the SHA-256 of the UID, as an integer (0 ... 4,294,967,295, the range of RSNA ids). It is stable:
the same UID always gives the same id, on any machine. In ``loose`` mode a study whose files all
sit in one numeric folder takes that folder's name; series ids follow the same two rules with
SeriesInstanceUID.

Series types come from `*_series_descriptions.csv` when given or found beside the images folder
(`test_images/` -> `test_series_descriptions.csv`), else from the DICOM headers
(`spinegrade.dicom.load_study`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spinegrade.data.tables import read_series
from spinegrade.dicom import Study, load_study, read_header, series_from_stacks
from spinegrade.dicom.loose import group_by_study, read_by_series
from spinegrade.dicom.series import build_stacks
from spinegrade.errors import DataError, DicomError

IMAGES, STUDY, LOOSE = "images", "study", "loose"


@dataclass(frozen=True)
class StudySource:
    """Where one study's files are: a study folder, or (``loose``) the list of its files."""

    study_id: int
    path: Path  #: the study folder (``loose``: the deepest folder holding all its files)
    files: tuple[Path, ...] | None = None  #: ``loose`` only: the files of this study


@dataclass
class Discovery:
    """The studies found under a folder, in a stable order, and what could not be used."""

    root: Path
    layout: str  #: IMAGES, STUDY or LOOSE
    studies: list[StudySource]
    series_descriptions: pd.DataFrame | None = None
    ignored: list[tuple[Path, str]] = field(default_factory=list)  #: (file, reason), ``loose`` only


def uid_to_id(uid: str) -> int:
    """Stable integer id of a DICOM UID: the first 8 hex digits of its SHA-256 (fits RSNA ids)."""
    return int(hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:8], 16)


def discover_studies(
    root: str | Path, series_descriptions: str | Path | None = None, *, workers: int = 0
) -> Discovery:
    """The studies under `root` (see the module docstring for the arrangements understood).

    `series_descriptions` is a `*_series_descriptions.csv`; without it one beside the images folder
    is used when present. `workers > 0` reads headers in processes (``loose`` mode only).
    Raises DataError when `root` is not a folder or holds no file at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: studies folder {'not found' if not root.exists() else 'is not a folder'}"
        )
    layout = detect_layout(root)
    table = (
        read_series(series_descriptions)
        if series_descriptions is not None
        else _beside(root, layout)
    )
    if layout == IMAGES:
        dirs = sorted(_subdirs(root), key=_folder_order)
        studies = [StudySource(_folder_id(d), d) for d in dirs]
        out = Discovery(root, layout, studies, table)
    elif layout == STUDY:
        out = Discovery(root, layout, [StudySource(_folder_id(root), root)], table)
    else:
        out = _group_loose(root, workers)
    _check_unique(out.studies)
    return out


def detect_layout(root: Path) -> str:
    """IMAGES, STUDY or LOOSE for the folder `root` (DataError when it holds no file at all).

    Numeric subfolders only, no files beside them: IMAGES when most of them hold folders, STUDY
    when most hold files. Anything else is LOOSE.
    """
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DataError(f"{root}: the studies folder is empty")
    dirs = [p for p in entries if p.is_dir()]
    if len(dirs) < len(entries) or not all(d.name.isdigit() for d in dirs):
        return LOOSE
    votes = Counter()
    for d in dirs:
        inner = [p for p in d.iterdir() if not p.name.startswith(".")]
        if inner:
            votes[IMAGES if all(p.is_dir() for p in inner) else STUDY] += 1
    if not votes:
        return IMAGES  # numeric study folders, all empty: each will be reported as a bad study
    return IMAGES if votes[IMAGES] >= votes[STUDY] else STUDY


def load_source(source: StudySource, series_descriptions: pd.DataFrame | None = None) -> Study:
    """Read one study (pixels and all). Raises DicomError when nothing in it can be used."""
    study = (
        _load_loose(source)
        if source.files is not None
        else load_study(source.path, series_descriptions)
    )
    return dataclasses.replace(study, study_id=source.study_id)


# --- RSNA folders --------------------------------------------------------------------------------


def _beside(root: Path, layout: str) -> pd.DataFrame | None:
    """`<prefix>_series_descriptions.csv` next to the images folder (`test_images` ->
    `test_...`)."""
    images = root if layout == IMAGES else root.parent if layout == STUDY else None
    if images is None:
        return None
    prefix = images.name.removesuffix("_images")
    found = images.parent / f"{prefix}_series_descriptions.csv"
    return read_series(found) if found.is_file() else None


def _folder_id(folder: Path) -> int:
    """The folder's name when numeric, else `uid_to_id` of the StudyInstanceUID of its first
    file."""
    num = _folder_num(folder)
    if num is not None:
        return num
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            try:
                return uid_to_id(read_header(path).study_uid)
            except DicomError:
                continue
    return uid_to_id(folder.name)  # nothing readable: the study will fail; keep a stable id anyway


def _folder_num(folder: Path) -> int | None:
    return int(folder.name) if folder.name.isdigit() else None


def _subdirs(folder: Path) -> list[Path]:
    return [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]


def _folder_order(folder: Path) -> tuple[bool, int, str]:
    num = _folder_num(folder)
    return (num is None, num or 0, folder.name)


def _check_unique(studies: Sequence[StudySource]) -> None:
    seen: dict[int, Path] = {}
    for s in studies:
        if s.study_id in seen:
            raise DataError(f"{s.path}: study id {s.study_id} is also the id of {seen[s.study_id]}")
        seen[s.study_id] = s.path


# --- loose files ---------------------------------------------------------------------------------


def _group_loose(root: Path, workers: int) -> Discovery:
    """Read the header of every file under `root` and group the DICOM ones by study UID."""
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    by_study, ignored = group_by_study(files, workers=workers)
    if not by_study:
        raise DataError(f"{root}: no readable DICOM file among {len(files)} file(s)")
    studies = []
    folders = {
        uid: Path(os.path.commonpath([p.parent for p in paths])) for uid, paths in by_study.items()
    }
    shared = Counter(folders.values())
    for uid, paths in by_study.items():
        num = _folder_num(folders[uid]) if shared[folders[uid]] == 1 else None
        studies.append(
            StudySource(num if num is not None else uid_to_id(uid), folders[uid], tuple(paths))
        )
    studies.sort(key=lambda s: (str(s.path), s.study_id))
    return Discovery(root, LOOSE, studies, None, ignored)


def _load_loose(source: StudySource) -> Study:
    """A `Study` from loose files: series by SeriesInstanceUID, each split into stacks."""
    by_series, skipped = read_by_series(source.files or ())
    folders = {
        uid: Path(os.path.commonpath([h.path.parent for h, _ in s])) for uid, s in by_series.items()
    }
    shared = Counter(folders.values())
    loaded = []
    for uid, slices in by_series.items():
        num = _folder_num(folders[uid]) if shared[folders[uid]] == 1 else None
        sid = num if num is not None and num != source.study_id else uid_to_id(uid)
        loaded.append((sid, build_stacks(slices, folders[uid])))
    series = series_from_stacks(loaded)  # the type decision of load_study, with no table
    if not series:
        why = "; ".join(skipped[:3]) if skipped else "no files"
        raise DicomError(source.path, f"no usable series in the study ({why})")
    series.sort(key=lambda s: s.series_id)
    return Study(study_id=source.study_id, path=source.path, series=series, skipped=skipped)
