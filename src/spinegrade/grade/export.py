"""The grader in a form that exports to ONNX: fixed shapes, no data-dependent branch.

`GraderNet.forward` sends only the existing crops through the backbone (`crops[valid]`, and a
branch on `valid.any()`), which a traced graph cannot express for every batch. `ExportGrader`
wraps a trained `GraderNet` unchanged and computes the same logits another way: every crop goes
through the backbone and the features of missing crops are then zeroed, as `GraderNet` does.
Per crop the backbone is independent of the others (eval mode), so both give the same logits to
float precision (`tests/grade/test_export.py` holds them to it).
"""

from __future__ import annotations

import torch
from torch import nn

from spinegrade.grade.model import GraderNet

#: Input and output names of the exported grader.
GRADER_INPUTS, GRADER_OUTPUTS = ("crops", "valid"), ("logits",)


class ExportGrader(nn.Module):
    """`forward(crops (b, n, slices, P, P), valid (b, n) bool) -> logits (b, t, 3)` (`n` crop
    slots, `t` targets: see `GraderNet`)."""

    def __init__(self, net: GraderNet) -> None:
        super().__init__()
        self.net = net.eval()

    def forward(self, crops: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        net = self.net
        b, n = crops.shape[0], crops.shape[1]
        proj = net.project(net.backbone(crops.flatten(0, 1))).unflatten(0, (b, n))
        feats = proj * valid.unsqueeze(-1).to(proj.dtype)  # (b, n, dim): zero where no crop
        return net.grade(feats, valid)
