"""The grader's network on any list of targets; the 25-target spec is stored as it always was."""

from __future__ import annotations

from pathlib import Path

import torch

from spinegrade.constants import TARGETS
from spinegrade.grade.model import GraderNet, GraderSpec
from spinegrade.training.checkpoint import load_checkpoint, save_checkpoint

FORAMINAL = tuple(t for t in TARGETS if "foraminal" in t[0])


def test_the_default_spec_keeps_its_old_form() -> None:
    spec = GraderSpec(backbone="test_resnet", in_chans=1, dim=16)
    assert "targets" not in spec.to_dict() and spec.targets == TARGETS
    net = GraderNet(spec)
    assert list(net.heads) == ["spinal", "foraminal", "subarticular"]
    assert net.target_embed.shape == (25, 16)


def test_a_target_subset_has_its_tokens_and_heads_and_survives_a_checkpoint(tmp_path: Path):
    spec = GraderSpec(backbone="test_resnet", in_chans=1, dim=16, targets=FORAMINAL)
    net = GraderNet(spec).eval()
    assert list(net.heads) == ["foraminal"]
    crops, valid = torch.rand(2, 10, 1, 16, 16), torch.ones(2, 10, dtype=torch.bool)
    valid[1, 3] = False
    out = net(crops, valid)
    assert out.shape == (2, 10, 3)
    save_checkpoint(tmp_path / "m.pt", {"model": net.state_dict(), "spec": spec.to_dict()})
    state = load_checkpoint(tmp_path / "m.pt")
    again = GraderNet(GraderSpec(**state["spec"])).eval()
    again.load_state_dict(state["model"])
    assert again.spec == spec
    assert torch.allclose(again(crops, valid), out)
