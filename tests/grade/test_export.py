"""The grader's export form computes GraderNet's logits: missing crops leave no trace."""

from __future__ import annotations

import torch

from spinegrade.constants import TARGETS
from spinegrade.grade.export import ExportGrader
from spinegrade.grade.model import GraderNet, GraderSpec


def test_export_grader_gives_the_logits_of_grader_net() -> None:
    torch.manual_seed(0)
    net = GraderNet(GraderSpec(backbone="resnet10t", in_chans=3, dim=32, context_layers=1)).eval()
    crops = torch.randn(3, len(TARGETS), 3, 24, 24)
    valid = torch.rand(3, len(TARGETS)) > 0.3
    valid[2] = False  # a study with no crop at all
    crops[~valid] = torch.randn(int((~valid).sum()), 3, 24, 24)  # garbage where no crop
    with torch.no_grad():
        want, got = net(crops, valid), ExportGrader(net)(crops, valid)
    assert got.shape == (3, len(TARGETS), 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the missing crops' pixels do not matter, as in GraderNet
        crops[~valid] = 0.0
        again = ExportGrader(net)(crops, valid)
    torch.testing.assert_close(again, got, atol=1e-5, rtol=1e-5)
