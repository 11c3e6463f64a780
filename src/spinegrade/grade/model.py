"""The grading network: a shared timm backbone per crop, study context, a head per condition group.

Input: the 25 crops of each study `(b, 25, slices, P, P)` and which of them exist `(b, 25)`.
1. Every existing crop goes through one timm backbone (`in_chans = slices`, pooled features).
2. The features are projected to `dim` and a learned embedding of the target (condition x level)
   is added, giving 25 tokens per study; missing crops are a zero feature plus their embedding.
3. `context_layers` transformer layers let the 25 tokens of a study see each other (severities of
   neighbouring levels and of both sides are correlated); 0 skips this.
4. One linear head per condition group (spinal, foraminal, subarticular; left and right share
   theirs) gives the logits `(b, 25, 3)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from spinegrade.constants import CONDITION_GROUPS, GROUP_OF_CONDITION, SEVERITIES, TARGETS
from spinegrade.training.backbones import create_backbone


@dataclass(frozen=True)
class GraderSpec:
    """Everything needed to rebuild a :class:`GraderNet` (stored in its checkpoint)."""

    backbone: str = "resnet18"
    in_chans: int = 5
    pretrained: bool | str = False  #: see `spinegrade.training.backbones`
    dim: int = 128
    context_layers: int = 1
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class GraderNet(nn.Module):
    """`forward(crops (b, 25, slices, P, P), valid (b, 25) bool) -> logits (b, 25, 3)`."""

    def __init__(self, spec: GraderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = create_backbone(
            spec.backbone, spec.pretrained, in_chans=spec.in_chans, num_classes=0
        )
        # with num_classes=0 the pooled output is `head_hidden_size` wide (e.g. MobileNetV3's 1024)
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.project = nn.Sequential(
            nn.Linear(width, spec.dim), nn.GELU(), nn.Dropout(spec.dropout)
        )
        self.target_embed = nn.Parameter(torch.zeros(len(TARGETS), spec.dim))
        nn.init.normal_(self.target_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            spec.dim,
            nhead=4,
            dim_feedforward=2 * spec.dim,
            dropout=spec.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.context = (
            nn.TransformerEncoder(layer, spec.context_layers, enable_nested_tensor=False)
            if spec.context_layers > 0
            else nn.Identity()
        )
        self.heads = nn.ModuleDict(
            {g: nn.Linear(spec.dim, len(SEVERITIES)) for g in CONDITION_GROUPS}
        )
        self.register_buffer(
            "group_of_target",
            torch.tensor([list(CONDITION_GROUPS).index(GROUP_OF_CONDITION[c]) for c, _ in TARGETS]),
            persistent=False,
        )

    def forward(self, crops: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, t = crops.shape[:2]
        if bool(valid.any()):
            proj = self.project(self.backbone(crops[valid]))  # (n_valid, dim)
            feats = proj.new_zeros(b, t, self.spec.dim)
            feats[valid] = proj
        else:
            feats = crops.new_zeros(b, t, self.spec.dim)
        tokens = self.context(feats + self.target_embed)  # (b, 25, dim)
        logits = torch.stack(
            [head(tokens) for head in self.heads.values()], dim=2
        )  # (b, 25, groups, 3)
        index = self.group_of_target.view(1, t, 1, 1).expand(b, t, 1, logits.shape[-1])
        return logits.gather(2, index).squeeze(2)
