"""Training augmentation of the grader's study samples.

Geometric jitter (centre shift in mm, slice shift, small rotation and zoom) is applied to the
*sampling grid* of each crop (`CropJitter`), so a crop is resampled once and never has empty
borders; intensity changes use albumentations on the normalised crop; and the patient left/right
mirror (`mirror_sample`) flips every crop the way its view requires (see `crops.mirror_crop`)
and swaps the slots (crops and labels) of the left and right targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import numpy as np

from spinegrade.constants import TARGETS
from spinegrade.grade.crops import CropJitter, mirror_crop
from spinegrade.grade.views import CropSlots, mirror_index

#: `MIRROR_INDEX[t]` is the target that `t` becomes in the mirrored patient (left <-> right).
MIRROR_INDEX: np.ndarray = mirror_index()


@dataclass(frozen=True)
class AugmentParams:
    """How strongly to jitter training crops (all zero/False = no augmentation)."""

    coord_jitter_mm: float = 0.0  #: std of the centre shift along each in-plane axis
    slice_shift: int = 0  #: the centre slice moves uniformly within +- this many slices
    angle_deg: float = 0.0  #: in-plane rotation, uniform within +- this
    scale: float = 0.0  #: zoom factor uniform in [1 - scale, 1 + scale]
    mirror_p: float = 0.0  #: probability of the left/right mirror of the whole sample
    intensity_p: float = 0.0  #: probability of each albumentations intensity transform


def random_jitter(rng: np.random.Generator, params: AugmentParams) -> CropJitter:
    """One crop's random `CropJitter` drawn from `params`."""
    return CropJitter(
        shift_mm=tuple(rng.normal(0.0, params.coord_jitter_mm, size=2))
        if params.coord_jitter_mm
        else (0.0, 0.0),
        slice_shift=int(rng.integers(-params.slice_shift, params.slice_shift + 1))
        if params.slice_shift
        else 0,
        angle_deg=float(rng.uniform(-params.angle_deg, params.angle_deg))
        if params.angle_deg
        else 0.0,
        scale=float(rng.uniform(1 - params.scale, 1 + params.scale)) if params.scale else 1.0,
    )


def intensity_transform(p: float) -> A.Compose:
    """albumentations intensity jitter for a normalised crop `(rows, cols, slices)` float32 in [0,
    1]."""
    return A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.2, p=p),
            A.RandomGamma(gamma_limit=(80, 125), p=p),
            A.GaussNoise(std_range=(0.0, 0.04), p=p / 2),
            A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.2, 0.8), p=p / 4),
        ]
    )


def apply_intensity(transform: A.Compose, crop: np.ndarray, seed: int) -> np.ndarray:
    """Run `transform` on a `(slices, rows, cols)` crop (albumentations wants channels last)."""
    transform.set_random_seed(seed)
    out = transform(image=np.ascontiguousarray(crop.transpose(1, 2, 0)))["image"]
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def mirror_sample(
    crops: np.ndarray,
    valid: np.ndarray,
    labels: np.ndarray,
    views: list[str],
    targets: Sequence[tuple[str, str]] = TARGETS,
    slots: CropSlots | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The sample of the left/right-mirrored patient.

    `crops (n, slices, rows, cols)`, `valid (n,)` and `views` (n names) are per crop slot of
    `slots` (default one slot per target of `targets`, the 25 `TARGETS`), `labels (t,)` per target.
    Every crop is mirrored for its view, then the left and right targets trade places: the mirrored
    crop of the left foramen at L4/L5 becomes the right foramen's crop there (each view in its own
    slot), with the left foramen's label.
    """
    slots = CropSlots.of(targets) if slots is None else slots
    mirrored = np.stack([mirror_crop(c, v) for c, v in zip(crops, views)])
    inverse = np.argsort(slots.mirror_index())  # slot j receives what slot index^-1[j] held
    back = np.argsort(mirror_index(slots.targets))
    return mirrored[inverse], valid[inverse], labels[back], [views[i] for i in inverse]
