"""The grader's network on any list of targets and views; the default spec is stored as it always
was."""

from __future__ import annotations

from pathlib import Path

import torch

from spinegrade.config import ViewsConfig
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


def test_the_default_views_add_nothing_to_the_network_or_its_spec() -> None:
    spec = GraderSpec(backbone="test_resnet", in_chans=1, dim=16)
    assert "views" not in spec.to_dict() and len(spec.slots) == 25
    net = GraderNet(spec)
    assert net.view_embed is None and not any("view" in k for k in net.state_dict())


def _spinal_both_net() -> GraderNet:
    torch.manual_seed(0)
    spec = GraderSpec(backbone="test_resnet", in_chans=1, dim=16, views=ViewsConfig(spinal="both"))
    return GraderNet(spec).eval()


def test_both_views_fuse_two_crops_into_one_token_and_survive_a_checkpoint(tmp_path: Path):
    net = _spinal_both_net()
    assert net.view_embed is not None and net.view_embed.shape == (2, 16)
    n = len(net.slots)
    assert n == 30
    crops, valid = torch.rand(2, n, 1, 16, 16), torch.ones(2, n, dtype=torch.bool)
    valid[1, 1] = False  # study 1: the L1/L2 canal has no axial crop
    with torch.no_grad():
        out = net(crops, valid)
        assert out.shape == (2, 25, 3) and torch.isfinite(out).all()
        # the missing crop's pixels do not matter; a present second view's do
        other = crops.clone()
        other[:, 1] = torch.rand(2, 1, 16, 16)
        again = net(other, valid)
    torch.testing.assert_close(again[1], out[1])
    assert not torch.allclose(again[0, 0], out[0, 0])

    spec = net.spec
    assert spec.to_dict()["views"] == {
        "spinal": "both",
        "foraminal": "sagittal",
        "subarticular": "axial",
    }
    save_checkpoint(tmp_path / "m.pt", {"model": net.state_dict(), "spec": spec.to_dict()})
    state = load_checkpoint(tmp_path / "m.pt")
    rebuilt = GraderNet(GraderSpec(**state["spec"])).eval()
    rebuilt.load_state_dict(state["model"])
    assert rebuilt.spec == spec
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(crops, valid), out)


def test_a_fused_token_is_the_mean_of_its_present_views() -> None:
    net = _spinal_both_net()
    with torch.no_grad():
        net.view_embed.zero_()  # then two identical crops average to the one crop's feature
        n = len(net.slots)
        crops = torch.rand(1, n, 1, 16, 16)
        crops[0, 1] = crops[0, 0]  # the L1/L2 canal: the same crop in both views
        both = torch.ones(1, n, dtype=torch.bool)
        one = both.clone()
        one[0, 1] = False
        torch.testing.assert_close(net(crops, both), net(crops, one))
