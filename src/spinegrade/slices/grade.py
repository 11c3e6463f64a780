"""Stage 2 on PNG images: the project's grader (`GraderNet`, one token per target) on crops.

One sample is one study: its 10 foraminal targets (Sagittal T1 slices: each target cropped around
its point on the slice it was marked on) or its 15 axial targets (crops: the canal and both
subarticular recesses of a level are each cropped from that level's crop around where they lie,
`located_crops`), one token each, so the context layer lets levels and sides see each other. A
target the study does not have is a missing token (label blank).

Crops are cut by `crop_2p5d` from the images' nominal `Volume`s (`slices.volumes`), so training
jitter (`grade.coord_jitter_mm`, rotation, zoom) and the intensity augmentation are the DICOM
pipeline's. The left/right mirror is used where it means something: an axial crop shows both
sides, so its mirror (columns flipped) swaps the left and right targets; a sagittal slice shows
one side, so there is nothing to mirror (`check_config` refuses `grade.mirror_p > 0` there, and
the mirror-consistency term, `grade.consistency_weight > 0`, which needs it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from spinegrade.config import Config, SlicesConfig, ViewsConfig
from spinegrade.constants import severity_index
from spinegrade.dicom.geometry import Volume
from spinegrade.errors import ConfigError
from spinegrade.grade.dataset import BLANK, GradeDataset, Located
from spinegrade.grade.predict import Grader
from spinegrade.grade.train import (
    augment_params,
    build_model,
    check_consistency,
    crop_params,
    fit_grader,
)
from spinegrade.slices.inputs import (
    AXIAL_CONDITIONS,
    CROPS,
    SLICES,
    TARGETS_OF_MODE,
    CropFolder,
    Folder,
    SliceFolder,
    mode_of,
    read_image,
)
from spinegrade.slices.volumes import crop_volume, slice_volume
from spinegrade.training.selection import split_for

#: Crops hold the slices' three neighbouring slices as channels; `grade.slices` must match.
CROP_CHANNELS = 3
#: Direction (in image columns) from a crop's centre to where each axial target is graded: a
#: larger column is the patient's left (the crops' radiological display).
SIDE = {
    "spinal_canal_stenosis": 0,
    "left_subarticular_stenosis": 1,
    "right_subarticular_stenosis": -1,
}


def check_config(cfg: Config, mode: str) -> None:
    """ConfigError where the config does not fit the mode's images."""
    g = cfg.grade
    if g.views != ViewsConfig():
        raise ConfigError(
            "grade.views: a PNG has no DICOM geometry to find a target's other view on; "
            "`spinegrade slices` grades each target on its own image (leave grade.views unset)"
        )
    if mode == SLICES and (g.mirror_p > 0 or cfg.slices.tta or g.consistency_weight > 0):
        raise ConfigError(
            "grade.mirror_p, grade.consistency_weight and slices.tta must be off for Sagittal T1 "
            "slices (a slice shows one side: there is nothing to mirror); use -c slices_cpu, or "
            "grade.mirror_p=0 grade.consistency_weight=0"
        )
    if mode == SLICES and cfg.localize.optim.early_stopping:
        raise ConfigError(
            "localize.optim.early_stopping is not supported by `spinegrade slices` yet (its "
            "localiser trains on every training study); use localize.optim.early_stopping=false"
        )
    if mode == SLICES and g.slices != 1:
        raise ConfigError(f"grade.slices is {g.slices}: a Sagittal T1 PNG is one slice (use 1)")
    if mode == CROPS and g.slices != CROP_CHANNELS:
        raise ConfigError(
            f"grade.slices is {g.slices}: an Axial T2 crop holds {CROP_CHANNELS} slices as channels"
        )
    if cfg.slices.graders < 1:
        raise ConfigError(f"slices.graders is {cfg.slices.graders}: a fold needs at least 1 grader")
    found = cfg.slices.found_point_graders
    if not 0 <= found <= cfg.slices.graders:
        raise ConfigError(
            f"slices.found_point_graders is {found}: between 0 and slices.graders "
            f"({cfg.slices.graders})"
        )
    if mode == CROPS and found:
        raise ConfigError("slices.found_point_graders: crops have no localiser (use 0)")
    check_consistency(g, TARGETS_OF_MODE[mode])


def load_volumes(folder: Folder, cfg: Config, progress: bool = False) -> dict[str, Volume]:
    """Every image of the folder as its nominal `Volume`, keyed by its `file`."""
    out: dict[str, Volume] = {}
    if isinstance(folder, SliceFolder):
        rows = folder.slices
        for r in tqdm(
            rows.itertuples(index=False), total=len(rows), desc="slices: read", disable=not progress
        ):
            path = folder.root / r.file
            out[r.file] = slice_volume(
                read_image(path, 1), (r.orig_rows, r.orig_cols), cfg.slices.fov_mm, path
            )
    else:
        rows = folder.crops
        for r in tqdm(
            rows.itertuples(index=False), total=len(rows), desc="crops: read", disable=not progress
        ):
            path = folder.root / r.file
            out[r.file] = crop_volume(
                read_image(path, CROP_CHANNELS), cfg.slices.crop_width_mm, path
            )
    return out


def slice_files(folder: SliceFolder) -> dict[tuple[int, int, int], str]:
    """(study_id, series_id, instance_number) -> the slice's file."""
    s = folder.slices
    return dict(zip(zip(s["study_id"], s["series_id"], s["instance_number"]), s["file"]))


def located_slices(
    points: pd.DataFrame,
    files: dict[tuple[int, int, int], str],
    volumes: dict[str, Volume],
    studies: list[int],
    offset_mm: tuple[float, float] = (0.0, 0.0),
) -> list[list[Located | None]]:
    """Per study, per foraminal target, the crop centre: the point (`x`, `y`, NaN = none) on its
    slice's volume, moved by `offset_mm` (right, down)."""
    targets = TARGETS_OF_MODE[SLICES]
    index = {t: i for i, t in enumerate(targets)}
    out: dict[int, list[Located | None]] = {s: [None] * len(targets) for s in studies}
    for r in points.itertuples(index=False):
        if int(r.study_id) in out and np.isfinite(r.x) and np.isfinite(r.y):
            vol = volumes[files[(int(r.study_id), int(r.series_id), int(r.instance_number))]]
            x = float(r.x) + offset_mm[0] / vol.spacing[0]
            y = float(r.y) + offset_mm[1] / vol.spacing[1]
            out[int(r.study_id)][index[(r.condition, r.level)]] = Located(vol, 0, x, y, "sagittal")
    return [out[s] for s in studies]


def located_crops(
    crops: pd.DataFrame, volumes: dict[str, Volume], studies: list[int], side_offset: float
) -> list[list[Located | None]]:
    """Per study, per axial target, where in its level's crop it is graded (None where the study
    has no crop of that level): the canal at the crop's centre, each subarticular recess
    `side_offset` of the crop's width to its side (the patient's left is the image's right)."""
    targets = TARGETS_OF_MODE[CROPS]
    index = {t: i for i, t in enumerate(targets)}
    out: dict[int, list[Located | None]] = {s: [None] * len(targets) for s in studies}
    for r in crops.itertuples(index=False):
        if int(r.study_id) not in out:
            continue
        vol = volumes[r.file]
        _, rows, cols = vol.shape
        for condition in AXIAL_CONDITIONS:
            x = (cols - 1) / 2 + SIDE[condition] * side_offset * cols
            loc = Located(vol, CROP_CHANNELS // 2, x, (rows - 1) / 2, "axial")
            out[int(r.study_id)][index[(condition, r.level)]] = loc
    return [out[s] for s in studies]


def located(
    folder: Folder, volumes: dict[str, Volume], studies: list[int], cfg: SlicesConfig
) -> list[list[Located | None]]:
    """The located targets of `studies`: in the crops of a crops folder, or at the slices' true
    points."""
    if isinstance(folder, CropFolder):
        return located_crops(folder.crops, volumes, studies, cfg.side_offset)
    return located_slices(folder.points, slice_files(folder), volumes, studies)


def label_vectors(labels: pd.DataFrame, studies: list[int], mode: str) -> list[np.ndarray]:
    """Per study the class indices `(t,)` int64 of the mode's targets (`BLANK` where blank)."""
    table = labels.set_index("study_id")
    columns = [f"{c}_{lv}" for c, lv in TARGETS_OF_MODE[mode]]
    out = []
    for s in studies:
        values = table.loc[int(s), columns] if int(s) in table.index else [np.nan] * len(columns)
        out.append(
            np.array(
                [severity_index(v) if isinstance(v, str) else BLANK for v in values], dtype=np.int64
            )
        )
    return out


def train_grader(
    folder: Folder,
    volumes: dict[str, Volume],
    labels: pd.DataFrame,
    train_ids: list[int],
    val_ids: list[int],
    out_dir: str | Path,
    cfg: Config,
    *,
    progress: bool = True,
    seed: int | None = None,
    points: pd.DataFrame | None = None,
) -> Path:
    """Fit the grader on the TRUE points (crops) of `train_ids`, jittered as `cfg.grade` says,
    with a validation loss on `val_ids`' (unjittered; it selects nothing) and, with
    `grade.optim.early_stopping`, the epoch chosen on an inner split of `train_ids`; returns
    `<out_dir>/model.pt`. `seed` (default `data.seed`) seeds its draws and augmentation.
    `points` (slices: `study_id, series_id, instance_number, condition, level, x, y`) replaces
    the true points of the training studies (the validation loss stays on the true ones)."""
    mode = mode_of(folder)
    fit_ids, select_ids = split_for(cfg.grade.optim, train_ids, labels, cfg.data.seed)
    targets = TARGETS_OF_MODE[mode]
    crop, augment = crop_params(cfg.grade), augment_params(cfg.grade)

    def data(ids: list[int], aug, found: bool):  # type: ignore[no-untyped-def]
        if found and points is not None:
            assert isinstance(folder, SliceFolder)
            where = located_slices(points, slice_files(folder), volumes, ids)
        else:
            where = located(folder, volumes, ids, cfg.slices)
        return GradeDataset(where, label_vectors(labels, ids, mode), crop, aug, ids, targets)

    model = build_model(cfg.grade, targets)
    meta = {"mode": mode, "train_studies": len(train_ids)}
    return fit_grader(
        model,
        data(fit_ids, augment, True),
        data(val_ids, None, False),
        out_dir,
        cfg,
        inner=data(select_ids, None, True) if select_ids else None,
        meta=meta,
        progress=progress,
        seed=seed,
    )


def point_offsets(mm: float) -> list[tuple[float, float]]:
    """The offsets `(right, down)` in mm at which a sagittal target is graded: its point alone
    (`mm` 0), or also `mm` to its right, left, below and above."""
    return [(0.0, 0.0)] + ([(mm, 0.0), (-mm, 0.0), (0.0, mm), (0.0, -mm)] if mm > 0 else [])


def grade_at(
    grader: Grader,
    points: pd.DataFrame,
    files: dict[tuple[int, int, int], str],
    volumes: dict[str, Volume],
    studies: list[int],
    around_mm: float = 0.0,
) -> np.ndarray:
    """Probabilities `(studies, t, 3)` of the foraminal targets at `points`: the mean over the
    crops at each point and, with `around_mm`, at the four points that far around it
    (`point_offsets`)."""
    probs = [
        grade(grader, located_slices(points, files, volumes, studies, offset), tta=False)
        for offset in point_offsets(around_mm)
    ]
    return np.mean(probs, axis=0)


def grade(grader: Grader, samples: list[list[Located | None]], *, tta: bool) -> np.ndarray:
    """Probabilities `(studies, t, 3)` of located samples (NaN where a target has none)."""
    probs = grader.predict_located(samples, tta=tta)
    return np.stack(probs) if probs else np.zeros((0, len(grader.targets), 3))
