"""The grader's export form computes GraderNet's logits: missing crops leave no trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinegrade.config import ViewsConfig
from spinegrade.grade.export import GRADER_INPUTS, GRADER_OUTPUTS, ExportGrader
from spinegrade.grade.model import GraderNet, GraderSpec
from spinegrade.training.runtime import OnnxNet, export_onnx


def _net(views: ViewsConfig) -> GraderNet:
    torch.manual_seed(0)
    spec = GraderSpec(backbone="resnet10t", in_chans=3, dim=32, context_layers=1, views=views)
    return GraderNet(spec).eval()


def _inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    crops = torch.randn(3, n, 3, 24, 24)
    valid = torch.rand(3, n) > 0.3
    valid[2] = False  # a study with no crop at all
    return crops, valid


@pytest.mark.parametrize("views", [ViewsConfig(), ViewsConfig(spinal="both", foraminal="axial")])
def test_export_grader_gives_the_logits_of_grader_net(views: ViewsConfig) -> None:
    net = _net(views)
    n = len(net.slots)
    crops, valid = _inputs(n)
    crops[~valid] = torch.randn(int((~valid).sum()), 3, 24, 24)  # garbage where no crop
    with torch.no_grad():
        want, got = net(crops, valid), ExportGrader(net)(crops, valid)
    assert got.shape == (3, 25, 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the missing crops' pixels do not matter, as in GraderNet
        crops[~valid] = 0.0
        again = ExportGrader(net)(crops, valid)
    torch.testing.assert_close(again, got, atol=1e-5, rtol=1e-5)


def test_a_grader_with_two_views_runs_in_onnx_runtime(tmp_path: Path) -> None:
    net = _net(ViewsConfig(spinal="both"))
    crops, valid = _inputs(len(net.slots))
    path = export_onnx(
        ExportGrader(net),
        (crops[:2], valid[:2]),
        tmp_path / "g.onnx",
        GRADER_INPUTS,
        GRADER_OUTPUTS,
    )
    got = OnnxNet(path, torch.device("cpu"))(crops.numpy(), valid.numpy())  # another batch size
    with torch.no_grad():
        want = net(crops, valid).numpy()
    assert got.shape == (3, 25, 3)
    np.testing.assert_allclose(got, want, atol=1e-4)
