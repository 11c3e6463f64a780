"""Grad-CAM of the grader: the wrapper is the grader, each map is its own target's, and a trained
grader's map of a severe level lies on the stenosis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.image import scale_cam_image

from spinegrade.config import ViewsConfig
from spinegrade.constants import SEVERITIES, TARGETS
from spinegrade.dicom import load_study
from spinegrade.errors import ConfigError
from spinegrade.grade import Grader
from spinegrade.grade.cam import (
    TargetLogits,
    cam_layer,
    distance_grid_mm,
    grad_cam,
    mass_within,
    peak_offset_mm,
)
from spinegrade.grade.dataset import CropParams, locate_targets, study_crops
from spinegrade.grade.model import GraderNet, GraderSpec
from spinegrade.training.runtime import TorchNet

from .conftest import severe_study

S, P = 3, 24


@pytest.fixture(scope="module")
def net() -> GraderNet:
    torch.manual_seed(0)
    return GraderNet(GraderSpec(backbone="test_resnet", in_chans=S, dim=32)).eval()


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    valid = np.ones(len(TARGETS), dtype=bool)
    valid[[3, 17]] = False
    crops = rng.random((len(TARGETS), S, P, P), dtype=np.float32) * valid[:, None, None, None]
    return crops, valid


def test_target_logits_are_the_graders_logits(
    net: GraderNet, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    crops, valid = (torch.from_numpy(a) for a in sample)
    slots = np.flatnonzero(sample[1])
    with torch.no_grad():
        full = net(crops[None], valid[None])[0]  # (25, 3)
        one_each = TargetLogits(net, crops, valid, slots)(crops[valid])
    torch.testing.assert_close(one_each, full[valid])


def test_each_map_is_its_own_targets_grad_cam(
    net: GraderNet, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    """The library's map of target k equals Grad-CAM by hand: the whole study through the grader,
    the gradient of target k's logit alone at crop k's activations."""
    crops, valid = sample
    classes = np.arange(len(TARGETS)) % 3
    maps = grad_cam(net, crops, valid, classes)
    layer = cam_layer(net, P)
    seen: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda m, i, out: seen.update(a=out))
    try:
        x = torch.from_numpy(crops)[None]
        logits = net(x, torch.from_numpy(valid)[None])[0]
        row = {int(t): r for r, t in enumerate(np.flatnonzero(valid))}  # crop rows of the batch
        for k in (0, 12, 24):
            (grad,) = torch.autograd.grad(logits[k, classes[k]], seen["a"], retain_graph=True)
            a, g = seen["a"][row[k]].detach(), grad[row[k]]
            cam = torch.relu((g.mean(dim=(1, 2))[:, None, None] * a).sum(0)).numpy()
            # the library scales to [0, 1] and resizes, then scales the resized map again
            want = scale_cam_image(scale_cam_image(cam[None], (P, P)))[0]
            np.testing.assert_allclose(maps[k], want, atol=1e-5)
    finally:
        hook.remove()
    assert all(p.grad is None for p in net.parameters())  # nothing left behind
    assert all(p.requires_grad for p in net.parameters())


def test_maps_shape_range_and_missing_targets(
    net: GraderNet, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    crops, valid = sample
    maps = grad_cam(net, crops, valid, [2] * len(TARGETS))
    assert maps.shape == (len(TARGETS), P, P) and maps.dtype == np.float32
    assert np.isnan(maps[~valid]).all() and not np.isnan(maps[valid]).any()
    assert maps[valid].min() >= 0 and maps[valid].max() <= 1 + 1e-6
    assert np.isnan(grad_cam(net, crops, np.zeros_like(valid), [0] * 25)).all()


def test_maps_per_crop_slot_with_two_views_of_the_canal() -> None:
    torch.manual_seed(0)
    spec = GraderSpec(backbone="test_resnet", in_chans=S, dim=32, views=ViewsConfig(spinal="both"))
    net = GraderNet(spec).eval()
    n = len(net.slots)  # 25 + the canal's 5 axial crops
    rng = np.random.default_rng(1)
    crops = rng.random((n, S, P, P), dtype=np.float32)
    valid = np.ones(n, dtype=bool)
    valid[-1] = False  # one axial canal crop missing
    with torch.no_grad():
        full = net(torch.from_numpy(crops)[None], torch.from_numpy(valid)[None])[0]  # (25, 3)
        slots = np.flatnonzero(valid)
        live = TargetLogits(net, torch.from_numpy(crops), torch.from_numpy(valid), slots)
        per_slot = live(torch.from_numpy(crops[valid]))
    # each slot's output is its target's logits, the two canal views giving the same target's
    torch.testing.assert_close(per_slot, full[np.asarray(net.slots.target)[slots]])
    maps = grad_cam(net, crops, valid, [2] * len(TARGETS))
    assert maps.shape == (n, P, P) and np.isnan(maps[-1]).all() and not np.isnan(maps[:-1]).any()


def test_cam_layer_is_the_deepest_stage_of_six_cells() -> None:
    net = GraderNet(GraderSpec(backbone="resnet10t", in_chans=3, dim=16))
    assert cam_layer(net, 24) is net.backbone.layer1  # 6 x 6; layer2 is 3 x 3, layer4 1 x 1
    assert cam_layer(net, 64) is net.backbone.layer2  # 8 x 8
    with pytest.raises(ConfigError, match="no feature stage"):
        cam_layer(net, 8)  # the stem's 4 x 4 is the finest


def test_mm_geometry_of_a_map() -> None:
    crop = CropParams(slices=1, crop_mm=24.0, crop_px=16)  # 1.5 mm pixels, the point at 7.5 / 8
    dist = distance_grid_mm(crop)
    assert dist.min() == pytest.approx(np.hypot(0.75, 0.75))
    heat = np.zeros((16, 16))
    heat[8, 12] = 1.0  # 4.5 px right of the point, 0.5 px below
    assert peak_offset_mm(heat, crop) == pytest.approx(1.5 * np.hypot(4.5, 0.5))
    uniform = np.ones((16, 16))
    assert mass_within(uniform, crop, 6.0) == pytest.approx((dist <= 6.0).mean())
    assert np.isnan(mass_within(np.zeros((16, 16)), crop, 6.0))


@pytest.mark.slow  # shares the trained grader of tests/grade (a few seconds, once per session)
@pytest.mark.parametrize(
    "target",
    [
        ("spinal_canal_stenosis", "l1_l2"),
        ("left_neural_foraminal_narrowing", "l4_l5"),
        ("right_subarticular_stenosis", "l2_l3"),
    ],
)
def test_map_of_a_severe_level_lies_on_the_stenosis(
    trained: Path, tmp_path: Path, target: tuple[str, str]
) -> None:
    """On a study with one severe level, most of the map of its predicted class lies within 8 mm
    of the graded point (the severe blob: 5 mm radius, on 24 mm crops; 8 mm is 35% of a crop)."""
    folder, points = severe_study(tmp_path, target)
    grader = Grader.load(trained)
    study = load_study(folder)
    t = TARGETS.index(target)
    probs = grader.predict(study, points)
    assert SEVERITIES[int(probs[t].argmax())] == "severe", probs[t]
    crops, valid, _ = study_crops(locate_targets(study, points), grader.crop)
    assert isinstance(grader.net, TorchNet) and isinstance(grader.net.module, GraderNet)
    maps = grad_cam(grader.net.module, crops, valid, probs.argmax(axis=1))
    share = mass_within(maps[t], grader.crop, 8.0)
    uniform = float((distance_grid_mm(grader.crop) <= 8.0).mean())
    assert share > 0.5 > uniform, (share, uniform)
    assert peak_offset_mm(maps[t], grader.crop) <= 8.0
