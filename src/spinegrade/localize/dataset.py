"""Training samples for the two heatmap models, built from cached studies and the coordinates table.

Every labelled point is first turned into a world (LPS mm) point through the geometry of the series
it
was marked on; each training series then sees those points through *its own* geometry. This is what
makes one sagittal model serve both sagittal series: its canal channels are supervised on Sagittal
T2/STIR (where the canal is marked) and also on Sagittal T1 (the same world points projected), which
gives a learned canal estimate on T1 when a study has no T2; its foramen channels are supervised on
T1.

Sagittal channels: `0..4` canal per level, `5..9` foramen per level (left and right foramina share
a channel: laterality comes from geometry, not from the network). Axial channels: `0` left, `1`
right
subarticular (laterality from the channel; a horizontal flip swaps them).

A sample is one slice (with its two neighbours as the other input channels). The target peak height
of a channel on a slice falls off with the slice's distance from the point (`slice_amplitude`), so
that at inference the slice with the highest peak is the slice of the point.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from spinegrade.constants import (
    AXIAL_T2,
    LEVELS,
    SAGITTAL_T1,
    SAGITTAL_T2,
)
from spinegrade.dicom import Study, Volume
from spinegrade.localize.targets import gaussian_heatmaps, slice_amplitude, to_heatmap
from spinegrade.timing import Timing
from spinegrade.training.sampling import item_seed

CANAL = "spinal_canal_stenosis"
FORAMEN = ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing")
SUBARTICULAR = ("left_subarticular_stenosis", "right_subarticular_stenosis")
SAGITTAL_CHANNELS = 2 * len(LEVELS)  #: canal x 5 levels, then foramen x 5 levels
AXIAL_CHANNELS = 2  #: left, right
#: Axial slices whose every target amplitude is below this are not used (keeps the labelled slices).
MIN_AXIAL_AMPLITUDE = 0.3
#: Sagittal slices with no target above this are negatives; only every `NEGATIVE_EVERY`-th is kept.
NEGATIVE_AMPLITUDE, NEGATIVE_EVERY = 0.01, 3


#: Intensity percentiles of a stack are taken on at most about this many pixels (a regular
#: subsample).
PERCENTILE_PIXELS = 1 << 20


def intensity_window(volume: Volume) -> tuple[float, float]:
    """The stack's 1st and 99.5th intensity percentiles, of a regular subsample of at most about
    `PERCENTILE_PIXELS` pixels (the same in training and inference)."""
    px = volume.pixels
    step = max(1, int(np.ceil(np.sqrt(px.size / PERCENTILE_PIXELS))))
    lo, hi = np.percentile(px[:, ::step, ::step].astype(np.float32), [1.0, 99.5])
    return float(lo), float(hi)


def prepare_stack(
    volume: Volume,
    size: int,
    slices: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Volume pixels `(s, rows, cols)` -> `(s, size, size)` float16 in [0, 1].

    Intensities are scaled by the stack's `intensity_window` (given, or computed); slices are
    resized with bilinear, antialiased interpolation (`align_corners=False`, the convention of
    `targets`). `slices` (indices) prepares only those, each exactly as within the whole stack.
    """
    lo, hi = window or intensity_window(volume)
    px = volume.pixels if slices is None else volume.pixels[np.asarray(slices)]
    t = torch.from_numpy(px.astype(np.float32))
    t = t.sub_(lo).div_(max(hi - lo, 1e-6)).clamp_(0.0, 1.0)[:, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t[:, 0].numpy().astype(np.float16)


class PreparedStacks:
    """Memo of :func:`prepare_stack` for the stacks of one study, shared by several localisers
    (the folds of a run) so that each stack, or each slice asked for, is prepared once."""

    def __init__(self) -> None:
        self.timing = Timing()  #: stage "prepare": the time spent preparing
        # the volume is kept in each entry, so its id cannot be reused while the memo lives
        self._memo: dict[tuple[int, int], tuple[Volume, np.ndarray]] = {}
        self._windows: dict[int, tuple[Volume, tuple[float, float]]] = {}
        self._slices: dict[tuple[int, int, int], tuple[Volume, np.ndarray]] = {}

    def get(self, volume: Volume, size: int) -> np.ndarray:
        """`prepare_stack(volume, size)`: every slice `(s, size, size)`, computed on first use."""
        key = (id(volume), size)
        if key not in self._memo:
            with self.timing.measure("prepare"):
                window = self._window(volume)
                self._memo[key] = (volume, prepare_stack(volume, size, window=window))
        return self._memo[key][1]

    def slice_input(self, volume: Volume, size: int, index: int) -> np.ndarray:
        """`slice_input(self.get(volume, size), index)`, preparing only the three slices used."""
        key = (id(volume), size)
        if key in self._memo:
            return slice_input(self._memo[key][1], index)
        idx = neighbour_indices(volume.shape[0], np.array([index]))[0]
        todo = [i for i in dict.fromkeys(idx.tolist()) if (id(volume), size, i) not in self._slices]
        if todo:
            with self.timing.measure("prepare"):
                ready = prepare_stack(volume, size, np.array(todo), self._window(volume))
            for i, image in zip(todo, ready):
                self._slices[(id(volume), size, i)] = (volume, image)
        return np.stack([self._slices[(id(volume), size, i)][1] for i in idx]).astype(np.float32)

    def _window(self, volume: Volume) -> tuple[float, float]:
        if id(volume) not in self._windows:
            self._windows[id(volume)] = (volume, intensity_window(volume))
        return self._windows[id(volume)][1]


def neighbour_indices(n: int, index: np.ndarray) -> np.ndarray:
    """Slices `index-1, index, index+1` of a stack of `n`, clamped at the ends: `(len(index),
    3)`."""
    return np.clip(np.asarray(index)[:, None] + np.array([-1, 0, 1])[None, :], 0, n - 1)


def slice_input(prepared: np.ndarray, index: int) -> np.ndarray:
    """Slices `index-1, index, index+1` (clamped at the ends) of a prepared stack -> `(3, s, s)`."""
    return prepared[neighbour_indices(len(prepared), np.array([index]))[0]].astype(np.float32)


def all_slice_inputs(prepared: np.ndarray) -> np.ndarray:
    """Every slice with its neighbours: `(s, size, size)` -> `(s, 3, size, size)` float32."""
    return prepared[neighbour_indices(len(prepared), np.arange(len(prepared)))].astype(np.float32)


def main_stack(study: Study, series_type: str) -> tuple[int, Volume] | None:
    """`(series_id, stack)` of the first series of a type (its stack with most slices), or None."""
    series = study.first(series_type)
    if series is None or not series.stacks:
        return None
    return int(series.series_id), max(series.stacks, key=lambda v: v.shape[0])


POINT_COLUMNS = (
    "condition",
    "level",
    "series_id",
    "stack",
    "slice",
    "x",
    "y",
    "wx",
    "wy",
    "wz",
    "nx",
    "ny",
    "nz",
    "dz",
)


def world_points(study: Study, coords: pd.DataFrame) -> pd.DataFrame:
    """Labelled points of one study in LPS mm, with the geometry of the slice they were marked on.

    Columns `POINT_COLUMNS`: condition, level, series_id, stack, slice, pixel x/y, world wx/wy/wz,
    the stack's unit normal nx/ny/nz and slice spacing dz. Rows whose series or instance is not in
    the study are dropped (they cannot be placed).
    """
    rows = []
    by_id = {int(s.series_id): s for s in study.series if s.series_id is not None}
    for r in coords.itertuples(index=False):
        series = by_id.get(int(r.series_id))
        if series is None or not np.isfinite(r.x) or not np.isfinite(r.y):
            continue
        for j, vol in enumerate(series.stacks):
            hit = np.flatnonzero(vol.instance_numbers == int(r.instance_number))
            if len(hit):
                w = vol.voxel_to_world([[r.x, r.y, hit[0]]])[0]
                rows.append(
                    (
                        r.condition,
                        r.level,
                        int(r.series_id),
                        j,
                        int(hit[0]),
                        float(r.x),
                        float(r.y),
                        *w,
                        *vol.normal,
                        vol.spacing[2],
                    )
                )
                break
    return pd.DataFrame(rows, columns=list(POINT_COLUMNS))


@dataclass
class SliceSample:
    """One training slice: which prepared stack and slice, and per channel its target point.

    `points (k, 2)` in network-input pixels (NaN where none), `amps (k,)` peak heights,
    `mask (k,)` 1 where the channel is supervised on this slice's series.
    """

    stack: int
    index: int
    points: np.ndarray
    amps: np.ndarray
    mask: np.ndarray


def _project(
    vol: Volume, points: np.ndarray, size: int, slice_sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """World points `(k, 3)` -> input pixels `(k, 2)` and per-slice amplitudes `(slices, k)`."""
    vox = vol.world_to_voxel(points)
    xy = to_heatmap(vox[:, :2], vol.shape[1:], size, 1)
    amps = slice_amplitude(np.arange(vol.shape[0])[:, None] - vox[None, :, 2], slice_sigma)
    return xy, amps


def sagittal_samples(
    study: Study, pts: pd.DataFrame, size: int, slice_sigma: float
) -> tuple[list[np.ndarray], list[SliceSample]]:
    """Prepared stacks and samples of the study's sagittal series: every slice near a labelled point
    and every `NEGATIVE_EVERY`-th of the others (negatives teach the model where points are not)."""
    stacks: list[np.ndarray] = []
    samples: list[SliceSample] = []
    k = len(LEVELS)
    for series in study.series:
        if series.series_type not in (SAGITTAL_T1, SAGITTAL_T2) or not series.stacks:
            continue
        vol = max(series.stacks, key=lambda v: v.shape[0])
        centers = np.full((SAGITTAL_CHANNELS, 2, 3), np.nan)  # channel, candidate (left/right), xyz
        mask = np.zeros(SAGITTAL_CHANNELS, np.float32)
        for i, level in enumerate(LEVELS):
            canal = pts[(pts.condition == CANAL) & (pts.level == level)]
            if len(canal):
                centers[i, 0] = canal[["wx", "wy", "wz"]].to_numpy().mean(axis=0)
                mask[i] = 1.0
            if series.series_type == SAGITTAL_T1:
                for side, cond in enumerate(FORAMEN):
                    hit = pts[(pts.condition == cond) & (pts.level == level)]
                    if len(hit):
                        centers[k + i, side] = hit[["wx", "wy", "wz"]].to_numpy()[0]
                # both foramina labelled, or neither: a half-labelled level is not a clean negative
                mask[k + i] = float(np.isfinite(centers[k + i, :, 0]).all())
        if not mask.any():
            continue
        flat = centers.reshape(-1, 3)
        ok = np.isfinite(flat[:, 0])
        xy = np.full((len(flat), 2), np.nan)
        amps = np.zeros((vol.shape[0], len(flat)))
        if ok.any():
            xy[ok], amps[:, ok] = _project(vol, flat[ok], size, slice_sigma)
        xy, amps = (
            xy.reshape(SAGITTAL_CHANNELS, 2, 2),
            amps.reshape(vol.shape[0], SAGITTAL_CHANNELS, 2),
        )
        stacks.append(prepare_stack(vol, size))
        for s in range(vol.shape[0]):
            if amps[s].max() < NEGATIVE_AMPLITUDE and s % NEGATIVE_EVERY:
                continue  # a thinned-out negative slice (far from every labelled point)
            best = amps[s].argmax(axis=1)  # the nearer of the two candidates (foramina: left/right)
            ch = np.arange(SAGITTAL_CHANNELS)
            samples.append(
                SliceSample(len(stacks) - 1, s, xy[ch, best], amps[s, ch, best] * mask, mask)
            )
    return stacks, samples


def axial_samples(
    study: Study, pts: pd.DataFrame, size: int, slice_sigma: float
) -> tuple[list[np.ndarray], list[SliceSample]]:
    """Prepared axial stacks and samples (the slices of the labelled subarticular points)."""
    stacks: list[np.ndarray] = []
    samples: list[SliceSample] = []
    sub = pts[pts.condition.isin(SUBARTICULAR)]
    for series in study.series:
        if series.series_type != AXIAL_T2:
            continue
        for vol in series.stacks:
            xy_all, amp_all, chans = [], [], []
            for r in sub.itertuples(index=False):
                xy, amps = _project(vol, np.array([[r.wx, r.wy, r.wz]]), size, slice_sigma)
                if amps.max() < MIN_AXIAL_AMPLITUDE:
                    continue
                xy_all.append(xy[0])
                amp_all.append(amps[:, 0])
                chans.append(SUBARTICULAR.index(r.condition))
            if not chans:
                continue
            stacks.append(prepare_stack(vol, size))
            xy_all, amp_all, chans = np.array(xy_all), np.array(amp_all), np.array(chans)
            for s in range(vol.shape[0]):
                if amp_all[:, s].max() < MIN_AXIAL_AMPLITUDE:
                    continue
                points = np.full((AXIAL_CHANNELS, 2), np.nan)
                amps = np.zeros(AXIAL_CHANNELS)
                for c in range(AXIAL_CHANNELS):
                    mine = np.flatnonzero(chans == c)
                    if len(mine):
                        best = mine[amp_all[mine, s].argmax()]
                        points[c], amps[c] = xy_all[best], amp_all[best, s]
                samples.append(
                    SliceSample(
                        len(stacks) - 1, s, points, amps, np.ones(AXIAL_CHANNELS, np.float32)
                    )
                )
    return stacks, samples


def augmentations(strength: float = 1.0) -> A.Compose:
    """Geometric + intensity augmentation with keypoints (no flips: those are handled per model)."""
    return A.Compose(
        [
            A.Affine(
                scale=(1 - 0.1 * strength, 1 + 0.1 * strength),
                translate_percent=(-0.06 * strength, 0.06 * strength),
                rotate=(-10 * strength, 10 * strength),
                border_mode=0,
                p=0.8,
            ),
            A.RandomBrightnessContrast(0.2 * strength, 0.2 * strength, p=0.5),
            A.RandomGamma((80, 120), p=0.3),
        ],
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
    )


class HeatmapDataset(Dataset):
    """Slices -> dicts `image (3, s, s)`, `target (k, s/stride, s/stride)`, `mask (k,)` tensors.

    With `flip_pairs` (axial: `[(0, 1)]`), a random horizontal flip mirrors the image and swaps
    the paired channels (left <-> right). Augmented draws are seeded by `item_seed`, so a seeded
    run draws the same augmentations again.
    """

    def __init__(
        self,
        stacks: list[np.ndarray],
        samples: list[SliceSample],
        size: int,
        stride: int,
        sigma: float,
        augment: bool = False,
        flip_pairs: tuple[tuple[int, int], ...] = (),
    ) -> None:
        self.stacks, self.samples = stacks, samples
        self.size, self.stride, self.sigma = size, stride, sigma
        self.transform = augmentations() if augment else None
        self.flip_pairs = flip_pairs if augment else ()
        self._calls = 0  # draws so far: each draw's augmentation has its own seed (`item_seed`)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        smp = self.samples[i]
        image = slice_input(self.stacks[smp.stack], smp.index)  # (3, s, s)
        points, amps, mask = smp.points.copy(), smp.amps.copy(), smp.mask.copy()
        self._calls += 1
        rng = np.random.default_rng(item_seed(i, self._calls))
        if self.transform is not None:
            self.transform.set_random_seed(int(rng.integers(2**31)))
            ok = np.isfinite(points[:, 0])
            kp = np.where(ok[:, None], points, 0.0)
            out = self.transform(image=np.ascontiguousarray(image.transpose(1, 2, 0)), keypoints=kp)
            image = out["image"].transpose(2, 0, 1)
            points = np.where(ok[:, None], np.asarray(out["keypoints"], dtype=np.float64), np.nan)
        if self.flip_pairs and rng.random() < 0.5:
            image = image[:, :, ::-1]
            points[:, 0] = self.size - 1 - points[:, 0]
            for a, b in self.flip_pairs:
                for arr in (points, amps, mask):
                    arr[[a, b]] = arr[[b, a]]
        hm = self.size // self.stride
        centers = (points + 0.5) / self.stride - 0.5
        target = gaussian_heatmaps(centers, amps, (hm, hm), self.sigma)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "target": torch.from_numpy(target),
            "mask": torch.from_numpy(mask.astype(np.float32)),
        }
