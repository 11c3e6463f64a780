"""Heatmap model: a timm backbone (`features_only`) and a light FPN decoder to the heatmap stride.

Input `(b, in_chans, size, size)` float, output logits `(b, k, size/stride, size/stride)`; apply a
sigmoid to get heatmaps in [0, 1] (trained against Gaussian targets with BCE).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from spinegrade.training.backbones import create_backbone


@dataclass(frozen=True)
class HeatmapSpec:
    """Everything needed to rebuild a :class:`HeatmapNet` (stored in its checkpoint)."""

    backbone: str
    channels: int  #: output heatmap channels
    in_chans: int = 3
    stride: int = 4
    width: int = 64  #: decoder width
    pretrained: bool | str = False  #: see `spinegrade.training.backbones`

    def to_dict(self) -> dict:
        return asdict(self)


class HeatmapNet(nn.Module):
    """timm encoder + top-down FPN (lateral 1x1, upsample-add) + a 3x3/1x1 head at `stride`."""

    def __init__(self, spec: HeatmapSpec) -> None:
        super().__init__()
        self.spec = spec
        probe = timm.create_model(spec.backbone, features_only=True, pretrained=False)
        reductions = probe.feature_info.reduction()
        keep = [i for i, r in enumerate(reductions) if r >= spec.stride]
        if not keep or reductions[keep[0]] != spec.stride:
            raise ValueError(f"backbone {spec.backbone} has no feature map at stride {spec.stride}")
        self.encoder = create_backbone(
            spec.backbone,
            spec.pretrained,
            features_only=True,
            in_chans=spec.in_chans,
            out_indices=tuple(keep),
        )
        chans = self.encoder.feature_info.channels()
        self.lateral = nn.ModuleList(nn.Conv2d(c, spec.width, 1) for c in chans)
        self.smooth = nn.Sequential(
            nn.Conv2d(spec.width, spec.width, 3, padding=1, bias=False),
            nn.BatchNorm2d(spec.width),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(spec.width, spec.channels, 1)
        nn.init.constant_(self.head.bias, -4.0)  # start near "no point anywhere"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(b, in_chans, s, s)` -> logits `(b, channels, s/stride, s/stride)`."""
        feats = self.encoder(x)
        out = self.lateral[-1](feats[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            out = F.interpolate(out, size=f.shape[-2:], mode="nearest") + lat(f)
        return self.head(self.smooth(out))
