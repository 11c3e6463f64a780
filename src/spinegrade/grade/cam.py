"""Grad-CAM of a grader: where in each target's crop the predicted severity came from.

The maps are computed by the `grad-cam` library (`pytorch_grad_cam.GradCAM`); this module only
makes a :class:`GraderNet` look like the image classifier that library expects. The grader takes a
whole study `(b, t, slices, P, P)` and its target tokens see each other in a transformer, so
:class:`TargetLogits` takes one crop per explained target `(n, slices, P, P)`, puts crop `k` back
into its slot of the study (the other slots hold their features, computed once and detached) and
returns that slot's logits `(n, 3)`. Sample `k` of the batch is thus the whole study with only
target `k`'s crop live, so one forward and one backward give every target's exact map: the
gradient reaching crop `k`'s activations comes from target `k`'s logit alone.

The layer is the backbone's deepest feature stage whose map is still at least `MIN_CAM_CELLS`
cells across the crop (:func:`cam_layer`), not the last one: on the crops of the configs the last
stage is 1 x 1 or 2 x 2 (24 px crops at stride 32 in `tiny`, `quick`, `demo`; 64 px in `full`),
where Grad-CAM is a constant or a quadrant. At 6 cells it is resnet10t's `layer1` on 24 px crops
(stride 4) and `layer2` on 48 and 64 px ones; on the test suite's severe-level studies, Grad-CAM
of a 3-cell stage put 22-73% of the map within 8 mm of the point, of a 6-cell one 61-91%.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from spinegrade.errors import ConfigError
from spinegrade.grade.crops import grid_offsets_mm
from spinegrade.grade.dataset import CropParams
from spinegrade.grade.model import GraderNet

#: The map's layer is the deepest backbone stage at least this many cells across the crop.
MIN_CAM_CELLS = 6


class TargetLogits(nn.Module):
    """One study seen by a grader, one live crop per sample: `forward(x (m, slices, P, P))
    -> logits (m, 3)` of the target of crop slot `slots[k]` when that slot's crop is `x[k]`.

    `crops (n, slices, P, P)` and `valid (n,)` are the study's sample, per crop slot (one per
    target with the default views); every other slot keeps the feature of its own crop (zero where
    `valid` is False), computed here once without gradients.
    """

    def __init__(
        self, net: GraderNet, crops: torch.Tensor, valid: torch.Tensor, slots: Sequence[int]
    ) -> None:
        super().__init__()
        self.net = net
        self.slots = torch.as_tensor(list(slots), dtype=torch.long)
        self.targets = torch.as_tensor(net.slots.target, dtype=torch.long)[self.slots]
        with torch.no_grad():
            feats = crops.new_zeros(len(valid), net.spec.dim)
            if bool(valid.any()):
                feats[valid] = net.encode(crops[valid])
        self.register_buffer("feats", feats, persistent=False)  # (n, dim)
        self.register_buffer("valid", valid.clone(), persistent=False)  # (n,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = len(self.slots)
        rows = torch.arange(m)
        feats = self.feats.unsqueeze(0).repeat(m, 1, 1)  # (m, n, dim)
        feats[rows, self.slots] = self.net.encode(x)
        valid = self.valid.unsqueeze(0).expand(m, -1)
        return self.net.grade(feats, valid)[rows, self.targets]  # (m, 3)


def cam_layer(net: GraderNet, crop_px: int) -> nn.Module:
    """The backbone stage the maps are taken at: the deepest timm feature stage whose output is
    at least `MIN_CAM_CELLS` cells across a `crop_px` crop."""
    stages = getattr(net.backbone, "feature_info", None) or []
    fitting = [s for s in stages if math.ceil(crop_px / s["reduction"]) >= MIN_CAM_CELLS]
    if not fitting:
        raise ConfigError(
            f"backbone {net.spec.backbone}: no feature stage of at least {MIN_CAM_CELLS} cells on "
            f"{crop_px} px crops, so no Grad-CAM"
        )
    return net.backbone.get_submodule(fitting[-1]["module"])


def grad_cam(
    net: GraderNet, crops: np.ndarray, valid: np.ndarray, classes: Sequence[int]
) -> np.ndarray:
    """Grad-CAM maps `(n, P, P)` float32 in [0, 1], per crop slot, of the logit of its target's
    class `classes[target]` (`classes` one per target) over each valid slot's crop; NaN where
    `valid` is False.

    `crops (n, slices, P, P)` float32 and `valid (n,)` bool: one study's sample (`study_crops`;
    `n` = the 25 targets with the default views). Each map is scaled to a maximum of 1 (all zero
    when no cell raised the logit).
    """
    n, _, px, _ = crops.shape
    out = np.full((n, px, px), np.nan, dtype=np.float32)
    slots = np.flatnonzero(valid)
    target_of = np.asarray(net.slots.target)
    if len(slots) == 0:
        return out
    device = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device)
    layer = cam_layer(net, px)
    was_training = net.training
    net.eval()
    with _grad_only(net, layer), torch.enable_grad():
        wrapper = TargetLogits(net, x, torch.from_numpy(valid).to(device), slots)
        with GradCAM(model=wrapper, target_layers=[layer]) as cam:
            targets = [ClassifierOutputTarget(int(classes[target_of[j]])) for j in slots]
            maps = cam(x[slots], targets=targets)
    net.zero_grad(set_to_none=True)
    net.train(was_training)
    out[slots] = maps
    return out


def distance_grid_mm(crop: CropParams) -> np.ndarray:
    """Distance `(P, P)` in mm of each crop pixel's centre from the crop's point."""
    offsets = grid_offsets_mm(crop.crop_mm, crop.crop_px)
    return np.hypot(offsets[:, None], offsets[None, :])


def mass_within(heat: np.ndarray, crop: CropParams, radius_mm: float) -> float:
    """Share of a map's mass `(P, P)` on pixels within `radius_mm` of the point (NaN if empty)."""
    total = float(heat.sum())
    if not total > 0:
        return float("nan")
    return float(heat[distance_grid_mm(crop) <= radius_mm].sum()) / total


def peak_offset_mm(heat: np.ndarray, crop: CropParams) -> float:
    """Distance in mm of a map's maximum `(P, P)` from the crop's point."""
    i, j = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return float(distance_grid_mm(crop)[i, j])


@contextlib.contextmanager
def _grad_only(net: nn.Module, layer: nn.Module) -> Iterator[None]:
    """Only `layer`'s parameters require gradients inside the block, so the backward pass stops
    at the layer's input (Grad-CAM needs the gradient at its output, nothing below)."""
    if not any(True for _ in layer.parameters()):  # e.g. an activation: keep every gradient
        yield
        return
    before = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)
    layer.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), before):
            p.requires_grad_(flag)


__all__ = [
    "MIN_CAM_CELLS",
    "TargetLogits",
    "cam_layer",
    "distance_grid_mm",
    "grad_cam",
    "mass_within",
    "peak_offset_mm",
]
