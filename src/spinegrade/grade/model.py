"""The grading network: a shared timm backbone per crop, study context, a head per condition group.

Input: the crops of each study's `t` targets `(b, t, slices, P, P)` and which of them exist
`(b, t)`; the targets are `GraderSpec.targets` (default the 25 `TARGETS`; `spinegrade slices`
grades the 10 foraminal or the 15 axial ones).
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
    #: the (condition, level) of each token, in order
    targets: tuple[tuple[str, str], ...] = TARGETS

    def __post_init__(self) -> None:
        # a checkpoint's metadata may hand back lists: keep the spec hashable and comparable
        object.__setattr__(self, "targets", tuple((str(c), str(lv)) for c, lv in self.targets))

    def to_dict(self) -> dict:
        """The spec as plain values; `targets` only when not the default 25 (so the DICOM
        pipeline's checkpoints hold what they held before targets were a choice)."""
        out = asdict(self)
        if self.targets == TARGETS:
            del out["targets"]
        return out

    @property
    def groups(self) -> tuple[str, ...]:
        """The condition groups of the targets, in `CONDITION_GROUPS` order (one head each)."""
        present = {GROUP_OF_CONDITION[c] for c, _ in self.targets}
        return tuple(g for g in CONDITION_GROUPS if g in present)


class GraderNet(nn.Module):
    """`forward(crops (b, t, slices, P, P), valid (b, t) bool) -> logits (b, t, 3)`, `t` =
    `len(spec.targets)`."""

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
        self.target_embed = nn.Parameter(torch.zeros(len(spec.targets), spec.dim))
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
        self.heads = nn.ModuleDict({g: nn.Linear(spec.dim, len(SEVERITIES)) for g in spec.groups})
        self.register_buffer(
            "group_of_target",
            torch.tensor([spec.groups.index(GROUP_OF_CONDITION[c]) for c, _ in spec.targets]),
            persistent=False,
        )

    def forward(self, crops: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, t = crops.shape[:2]
        if bool(valid.any()):
            proj = self.encode(crops[valid])  # (n_valid, dim)
            feats = proj.new_zeros(b, t, self.spec.dim)
            feats[valid] = proj
        else:
            feats = crops.new_zeros(b, t, self.spec.dim)
        return self.decode(feats)

    def encode(self, crops: torch.Tensor) -> torch.Tensor:
        """Steps 1-2 on single crops: `(n, slices, P, P)` -> projected features `(n, dim)`."""
        return self.project(self.backbone(crops))

    def decode(self, feats: torch.Tensor) -> torch.Tensor:
        """Steps 2-4: features `(b, t, dim)` (zero where no crop) -> logits `(b, t, 3)`."""
        b, t = feats.shape[:2]
        tokens = self.context(feats + self.target_embed)  # (b, t, dim)
        logits = torch.stack(
            [head(tokens) for head in self.heads.values()], dim=2
        )  # (b, t, groups, 3)
        index = self.group_of_target.view(1, t, 1, 1).expand(b, t, 1, logits.shape[-1])
        return logits.gather(2, index).squeeze(2)
