"""Study-level samples for the grader: the crops of a study, which of them exist, and labels.

One sample is one study, so the any-severe-spinal term of the loss (a max over the five spinal
levels of one study) is computed on whole studies. Each target's point is found on the series and
slice it names (`locate_targets`): spinal canal points on Sagittal T2/STIR, foraminal on Sagittal
T1, subarticular on the Axial T2 stack that holds the point's instance. Which views of each target
are cropped is `CropParams.views` (the config's `grade.views`; the module `grade.views` lays out the
crop slots): the view the point lies on is cropped there, the other where the point's world
position falls in that view's stack (`view_located`). `locate_study` does both, for training and
inference alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from spinegrade.config import ViewsConfig, from_dict
from spinegrade.constants import GROUP_OF_CONDITION, TARGET_COLUMNS, TARGETS, severity_index
from spinegrade.dicom import Study, Volume, nearest_slice
from spinegrade.grade.augment import (
    AugmentParams,
    apply_intensity,
    intensity_transform,
    mirror_sample,
    random_jitter,
)
from spinegrade.grade.crops import NO_JITTER, crop_2p5d, normalize_crop
from spinegrade.grade.views import SERIES_OF_VIEW, CropSlots
from spinegrade.training.sampling import item_seed

BLANK = -1
#: Columns a points table must have (one row per target; extra columns are ignored).
POINT_COLUMNS = ("series_id", "instance_number", "condition", "level", "x", "y")


@dataclass(frozen=True)
class CropParams:
    """The crop geometry and views shared by training and inference (stored in the checkpoint;
    one written before views were a choice has the default views)."""

    slices: int = 5
    crop_mm: float = 40.0
    crop_px: int = 64
    views: ViewsConfig = ViewsConfig()
    view_distance_mm: float = 10.0  #: see `GradeConfig.view_distance_mm`

    def __post_init__(self) -> None:
        if isinstance(self.views, dict):  # a checkpoint's metadata
            object.__setattr__(self, "views", from_dict(ViewsConfig, self.views, "crop.views"))

    def slots(self, targets: Sequence[tuple[str, str]] = TARGETS) -> CropSlots:
        """The crop slots of a sample over `targets` with these views."""
        return CropSlots.of(targets, self.views)


@dataclass(frozen=True)
class Located:
    """Where a target's point is: the stack, the slice index in it, pixel (x col, y row), view."""

    volume: Volume
    slice_index: int
    x: float
    y: float
    view: str


def locate(study: Study, series_id: Any, instance_number: Any, x: Any, y: Any) -> Located | None:
    """Find the stack of `study` holding the point; None if the series/instance is absent or x/y
    NaN."""
    if any(_missing(v) for v in (series_id, instance_number, x, y)):
        return None
    for series in study.series:
        if series.series_id != int(series_id):
            continue
        for volume in series.stacks:
            hits = np.flatnonzero(volume.instance_numbers == int(instance_number))
            if len(hits):
                view = "axial" if volume.plane == "axial" else "sagittal"
                return Located(volume, int(hits[0]), float(x), float(y), view)
    return None


def locate_targets(study: Study, points: pd.DataFrame) -> list[Located | None]:
    """The located point of each of the 25 targets in `TARGETS` order (None where it has none).

    `points` has the coordinates table's columns (`POINT_COLUMNS`); when a target has several rows
    the first is used.
    """
    found: list[Located | None] = [None] * len(TARGETS)
    if points is None or len(points) == 0:
        return found
    index = {t: i for i, t in enumerate(TARGETS)}
    for row in points.itertuples(index=False):
        i = index.get((row.condition, row.level))
        if i is not None and found[i] is None:
            found[i] = locate(study, row.series_id, row.instance_number, row.x, row.y)
    return found


def view_located(
    study: Study, loc: Located | None, group: str, view: str, max_distance_mm: float
) -> Located | None:
    """Where `view` of a target of condition group `group` is cropped, given its point `loc`.

    The point itself when it lies on that view; else the slice of the view's series
    (`SERIES_OF_VIEW`) nearest the point's world position, at the point's projection onto it,
    when the point is within `max_distance_mm` of that slice's plane and projects inside its
    image. None when there is no such slice (or no point).
    """
    if loc is None or loc.view == view:
        return loc
    world = loc.volume.voxel_to_world([[loc.x, loc.y, loc.slice_index]])[0]
    hit = nearest_slice(study, world, SERIES_OF_VIEW[group, view])
    if hit is None or hit.distance_mm > max_distance_mm or not hit.in_image:
        return None
    return Located(hit.volume, hit.slice_index, hit.col, hit.row, view)


def locate_study(study: Study, points: pd.DataFrame, crop: CropParams) -> list[Located | None]:
    """Where each crop slot of the 25 targets (`crop.slots()`) is cut in `study`, None where it
    has none: each target's point (`locate_targets`, `points` the coordinates table's columns)
    taken to each of its views (`view_located`). Training and inference both build samples so."""
    found = locate_targets(study, points)
    slots = crop.slots()
    return [
        view_located(
            study, found[t], GROUP_OF_CONDITION[TARGETS[t][0]], view, crop.view_distance_mm
        )
        for t, view in zip(slots.target, slots.view)
    ]


def study_crops(
    located: list[Located | None],
    crop: CropParams,
    *,
    rng: np.random.Generator | None = None,
    augment: AugmentParams | None = None,
    targets: Sequence[tuple[str, str]] = TARGETS,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Normalised crops `(n, slices, crop_px, crop_px)` float32 (zeros where no point), `valid
    (n,)` bool, and the view of each, per crop slot (`crop.slots(targets)`, `n` of them; one per
    target with the default views); `located` holds one entry per slot. With `augment` and
    `rng`, each crop gets a random jitter."""
    slots = crop.slots(targets)
    if len(located) != len(slots):
        raise ValueError(f"{len(located)} located points for {len(slots)} crop slots")
    out = np.zeros((len(slots), crop.slices, crop.crop_px, crop.crop_px), dtype=np.float32)
    valid = np.zeros(len(slots), dtype=bool)
    views = list(slots.view)
    for i, loc in enumerate(located):
        if loc is None:
            continue
        jitter = (
            random_jitter(rng, augment) if (augment is not None and rng is not None) else NO_JITTER
        )
        raw = crop_2p5d(
            loc.volume,
            loc.slice_index,
            loc.x,
            loc.y,
            view=loc.view,
            slices=crop.slices,
            crop_mm=crop.crop_mm,
            crop_px=crop.crop_px,
            jitter=jitter,
        )
        out[i], valid[i], views[i] = normalize_crop(raw), True, loc.view
    return out, valid, views


def label_vector(labels: pd.DataFrame | None, study_id: int) -> np.ndarray:
    """Class indices `(25,)` int64 of a study from the wide labels table (`BLANK` = -1 for
    blank)."""
    out = np.full(len(TARGETS), BLANK, dtype=np.int64)
    if labels is None:
        return out
    rows = labels[labels["study_id"] == int(study_id)]
    if rows.empty:
        return out
    for i, column in enumerate(TARGET_COLUMNS):
        value = rows.iloc[0][column]
        if isinstance(value, str):
            out[i] = severity_index(value)
    return out


def patch(loc: Located, crop: CropParams, augment: AugmentParams | None = None) -> Located:
    """The same point on a sub-volume just large enough for every crop `augment` can ask for.

    The sub-volume keeps the slices within `slices//2 + slice_shift` of the point's slice and the
    pixels within the crop's half-diagonal (zoomed out by `1 + scale`) plus 4 sigma of centre
    jitter,
    with its affine shifted so that world positions are unchanged; crops cut from it equal crops cut
    from the full volume. This keeps a training set of thousands of studies in memory (a few hundred
    KB per target instead of whole series) and cheap to hand to loader worker processes.
    """
    aug = augment or AugmentParams()
    vol = loc.volume
    dx, dy, _ = vol.spacing
    radius_mm = crop.crop_mm / 2 * np.sqrt(2) * (1 + aug.scale) + 4 * aug.coord_jitter_mm
    reach = crop.slices // 2 + aug.slice_shift
    n, rows, cols = vol.shape
    s0, s1 = max(loc.slice_index - reach, 0), min(loc.slice_index + reach + 1, n)
    c0, c1 = _span(loc.x, radius_mm / dx, cols)
    r0, r1 = _span(loc.y, radius_mm / dy, rows)
    shift = np.eye(4)
    shift[:3, 3] = (c0, r0, s0)
    sub = Volume(
        pixels=np.ascontiguousarray(vol.pixels[s0:s1, r0:r1, c0:c1]),
        affine=vol.affine @ shift,
        instance_numbers=vol.instance_numbers[s0:s1].copy(),
        meta=vol.meta,
    )
    return Located(sub, loc.slice_index - s0, loc.x - c0, loc.y - r0, loc.view)


def _span(centre: float, half_px: float, size: int) -> tuple[int, int]:
    """Integer pixel range [lo, hi) covering centre +- half_px (+1 px for interpolation),
    clipped."""
    lo = int(np.floor(centre - half_px)) - 1
    hi = int(np.ceil(centre + half_px)) + 2
    return max(lo, 0), max(min(hi, size), max(lo, 0) + 1)


class GradeDataset(Dataset):
    """One item per study: `{"crops": (n, slices, P, P) float32, "valid": (n,) bool,
    "labels": (t,) int64}` as tensors, `t = len(targets)` (default the 25 `TARGETS`), `n` crop
    slots (`crop.slots(targets)`; `n = t` with the default views). Crops are cut on the fly from
    each slot's located volume (with random augmentation when `augment` is given); build it with
    :meth:`from_studies` from DICOM studies, or from located points (one list per study, one
    entry per slot).

    With `twin` (see :meth:`with_twins`) an item also holds its left/right-mirrored twin,
    `"twin_crops" (n, slices, P, P)` and `"twin_valid" (n,)`: `mirror_sample` of the item's very
    crops (after augmentation), and `"target_valid" (t,)`, which targets have a crop, for the
    consistency term (`loss.mirror_consistency`).
    """

    def __init__(
        self,
        located: Sequence[list[Located | None]],
        labels: Sequence[np.ndarray],
        crop: CropParams,
        augment: AugmentParams | None = None,
        ids: Sequence[int] | None = None,
        targets: Sequence[tuple[str, str]] = TARGETS,
        twin: bool = False,
    ) -> None:
        self.located = list(located)
        self.ids = list(ids) if ids is not None else list(range(len(self.located)))
        self.labels = list(labels)
        self.crop = crop
        self.augment = augment
        self.targets = tuple(targets)
        self.twin = twin
        self.slots = crop.slots(self.targets)
        self.intensity = (
            intensity_transform(augment.intensity_p) if augment and augment.intensity_p else None
        )
        self._calls = 0

    @classmethod
    def from_studies(
        cls,
        studies: Iterable[tuple[int, Study]],
        points: pd.DataFrame,
        labels: pd.DataFrame | None,
        crop: CropParams,
        augment: AugmentParams | None = None,
        *,
        patches: bool = True,
    ) -> GradeDataset:
        """Locate each study's crop slots (`locate_study`; `points`: the coordinates table) and
        keep, with `patches`, only the sub-volumes the crops need (see :func:`patch`); `studies`
        may be a lazy iterator."""
        by_study = dict(tuple(points.groupby("study_id"))) if len(points) else {}
        located, vectors, ids = [], [], []
        for sid, study in studies:
            found = locate_study(study, by_study.get(sid, points.iloc[:0]), crop)
            located.append(
                [
                    patch(loc, crop, augment) if (loc is not None and patches) else loc
                    for loc in found
                ]
            )
            vectors.append(label_vector(labels, sid))
            ids.append(sid)
        return cls(located, vectors, crop, augment, ids)

    def split(self, ids: set[int], augment: AugmentParams | None) -> GradeDataset:
        """The studies of this set whose id is in `ids` (sharing the volumes), augmented with
        `augment`."""
        keep = [i for i, s in enumerate(self.ids) if s in ids]
        return GradeDataset(
            [self.located[i] for i in keep],
            [self.labels[i] for i in keep],
            self.crop,
            augment,
            [self.ids[i] for i in keep],
            self.targets,
        )

    def with_twins(self) -> GradeDataset:
        """This set (sharing its volumes and augmentation) with each item's mirrored twin added."""
        return GradeDataset(
            self.located, self.labels, self.crop, self.augment, self.ids, self.targets, twin=True
        )

    def __len__(self) -> int:
        return len(self.located)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        labels = self.labels[index].copy()
        if self.augment is None:
            crops, valid, views = study_crops(self.located[index], self.crop, targets=self.targets)
            return self._item(crops, valid, labels, views)
        self._calls += 1
        rng = np.random.default_rng(item_seed(index, self._calls))
        crops, valid, views = study_crops(
            self.located[index], self.crop, rng=rng, augment=self.augment, targets=self.targets
        )
        if self.intensity is not None:
            for i in np.flatnonzero(valid):
                crops[i] = apply_intensity(self.intensity, crops[i], int(rng.integers(2**31)))
        if rng.random() < self.augment.mirror_p:
            crops, valid, labels, views = mirror_sample(
                crops, valid, labels, views, slots=self.slots
            )
        return self._item(crops, valid, labels, views)

    def _item(
        self, crops: np.ndarray, valid: np.ndarray, labels: np.ndarray, views: list[str]
    ) -> dict[str, torch.Tensor]:
        """The item's tensors, with its mirrored twin when `twin` is on."""
        item = _as_tensors(crops, valid, labels, self.slots)
        if self.twin:
            twin_crops, twin_valid, _, _ = mirror_sample(
                crops, valid, labels, views, slots=self.slots
            )
            item["twin_crops"] = torch.from_numpy(twin_crops)
            item["twin_valid"] = torch.from_numpy(twin_valid)
            item["target_valid"] = torch.from_numpy(self.slots.target_valid(valid))
        return item


def _as_tensors(
    crops: np.ndarray, valid: np.ndarray, labels: np.ndarray, slots: CropSlots
) -> dict[str, torch.Tensor]:
    """Targets without any crop are not trained on: their label becomes BLANK."""
    labels = np.where(slots.target_valid(valid), labels, BLANK)
    return {
        "crops": torch.from_numpy(np.ascontiguousarray(crops)),
        "valid": torch.from_numpy(valid),
        "labels": torch.from_numpy(labels),
    }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value)
