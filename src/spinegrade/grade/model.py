"""The grading network: a shared timm backbone per crop, study context, a head per condition group.

Input: the crops of each study's `n` crop slots `(b, n, slices, P, P)` and which of them exist
`(b, n)`; a slot is one view of one target (`grade.views.CropSlots`: `n = t` with the default
views, one crop per target). The targets are `GraderSpec.targets` (default the 25 `TARGETS`;
`spinegrade slices` grades the 10 foraminal or the 15 axial ones), their views `GraderSpec.views`.
1. Every existing crop goes through one timm backbone (`in_chans = slices`, pooled features).
2. The features are projected to `dim`. Where a target has two views (`both`), each crop's
   feature gets a learned embedding of its view and the target's feature is the mean of its
   present crops' (`GraderNet.fuse`). A learned embedding of the target (condition x level) is
   added, giving `t` tokens per study; a target without crops is a zero feature plus its embedding.
3. `context_layers` transformer layers let the 25 tokens of a study see each other (severities of
   neighbouring levels and of both sides are correlated); 0 skips this.
4. One linear head per condition group (spinal, foraminal, subarticular; left and right share
   theirs) gives the logits `(b, t, 3)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from spinegrade.config import ViewsConfig, from_dict
from spinegrade.constants import CONDITION_GROUPS, GROUP_OF_CONDITION, SEVERITIES, TARGETS
from spinegrade.grade.views import VIEWS, CropSlots
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
    #: the view(s) each condition group is graded from (`grade.views`)
    views: ViewsConfig = ViewsConfig()

    def __post_init__(self) -> None:
        # a checkpoint's metadata may hand back lists: keep the spec hashable and comparable
        object.__setattr__(self, "targets", tuple((str(c), str(lv)) for c, lv in self.targets))
        if isinstance(self.views, dict):
            object.__setattr__(self, "views", from_dict(ViewsConfig, self.views, "spec.views"))

    def to_dict(self) -> dict:
        """The spec as plain values; `targets` only when not the default 25 and `views` only when
        not the default (so checkpoints hold what they held before either was a choice)."""
        out = asdict(self)
        if self.targets == TARGETS:
            del out["targets"]
        if self.views == ViewsConfig():
            del out["views"]
        return out

    @property
    def slots(self) -> CropSlots:
        """The crop slots the network takes (one per target with the default views)."""
        return CropSlots.of(self.targets, self.views)

    @property
    def groups(self) -> tuple[str, ...]:
        """The condition groups of the targets, in `CONDITION_GROUPS` order (one head each)."""
        present = {GROUP_OF_CONDITION[c] for c, _ in self.targets}
        return tuple(g for g in CONDITION_GROUPS if g in present)


class GraderNet(nn.Module):
    """`forward(crops (b, n, slices, P, P), valid (b, n) bool) -> logits (b, t, 3)`, `t` =
    `len(spec.targets)`, `n = len(spec.slots)` crop slots."""

    def __init__(self, spec: GraderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.slots = spec.slots
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
        # only a spec with a fused target has these (older checkpoints load as they were)
        self.view_embed: nn.Parameter | None = None
        if self.slots.fused:
            self.view_embed = nn.Parameter(torch.zeros(len(VIEWS), spec.dim))
            nn.init.normal_(self.view_embed, std=0.02)
            self.register_buffer(
                "slot_view", torch.from_numpy(self.slots.view_index()), persistent=False
            )
            self.register_buffer(
                "assignment", torch.from_numpy(self.slots.assignment()), persistent=False
            )
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
        b, n = crops.shape[:2]
        if bool(valid.any()):
            proj = self.encode(crops[valid])  # (n_valid, dim)
            feats = proj.new_zeros(b, n, self.spec.dim)
            feats[valid] = proj
        else:
            feats = crops.new_zeros(b, n, self.spec.dim)
        return self.grade(feats, valid)

    def encode(self, crops: torch.Tensor) -> torch.Tensor:
        """Steps 1-2 on single crops: `(m, slices, P, P)` -> projected features `(m, dim)`."""
        return self.project(self.backbone(crops))

    def fuse(self, feats: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-slot features `(b, n, dim)` (zero where no crop) -> per-target `(b, t, dim)`: each
        present crop's feature plus its view's embedding, averaged over a target's present crops
        (zero where it has none). The identity with one slot per target."""
        if self.view_embed is None:
            return feats
        present = valid.to(feats.dtype)  # (b, n)
        feats = (feats + self.view_embed[self.slot_view]) * present.unsqueeze(-1)
        total = torch.einsum("bnd,nt->btd", feats, self.assignment)
        count = (present @ self.assignment).clamp(min=1.0)  # (b, t)
        return total / count.unsqueeze(-1)

    def grade(self, feats: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Logits `(b, t, 3)` from per-slot features `(b, n, dim)` (zero where no crop) and
        `valid (b, n)`: fused into the targets' tokens, through the context layers and heads."""
        tokens = self.context(self.fuse(feats, valid) + self.target_embed)  # (b, t, dim)
        b, t = tokens.shape[:2]
        logits = torch.stack(
            [head(tokens) for head in self.heads.values()], dim=2
        )  # (b, t, groups, 3)
        index = self.group_of_target.view(1, t, 1, 1).expand(b, t, 1, logits.shape[-1])
        return logits.gather(2, index).squeeze(2)
