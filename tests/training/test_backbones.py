"""Starting weights from a local file (never the network in tests): timm adapts the first
convolution to the grader's slice channels, the localiser's encoder takes them as they are, and a
missing, unreadable or mismatched file is one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv

from spinegrade.config import load_config
from spinegrade.errors import ConfigError
from spinegrade.grade.train import build_model
from spinegrade.localize.dataset import SAGITTAL_CHANNELS
from spinegrade.localize.train import build_net
from spinegrade.training.backbones import check_pretrained, create_backbone

BACKBONE = "test_resnet"  #: timm's tiny test network; its first conv is `conv1.0`


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], Path]:
    """A timm model's state_dict as a .pth file (and the tensors it holds)."""
    torch.manual_seed(3)
    state = timm.create_model(BACKBONE).state_dict()
    path = tmp_path_factory.mktemp("weights") / f"{BACKBONE}.pth"
    torch.save(state, path)
    return state, path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_grader_starts_from_a_weights_file_with_adapted_channels(
    weights: tuple[dict[str, torch.Tensor], Path], tmp_path: Path, suffix: str
) -> None:
    state, pth = weights
    path = pth if suffix == ".pth" else tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    cfg = load_config("tiny", [f"grade.backbone={BACKBONE}", "grade.slices=5"])
    cfg.grade.pretrained = str(path)
    conv = build_model(cfg.grade).backbone.conv1[0].weight  # (16, 5, 3, 3)
    assert conv.shape[1] == 5
    torch.testing.assert_close(conv, adapt_input_conv(5, state["conv1.0.weight"].clone()))
    assert not torch.allclose(conv[:, :3], state["conv1.0.weight"])  # adapted, not copied
    later = build_model(cfg.grade).backbone.layer1[0].conv1.weight
    torch.testing.assert_close(later, state["layer1.0.conv1.weight"])
    cfg.grade.pretrained = False
    random = build_model(cfg.grade).backbone.layer1[0].conv1.weight
    assert not torch.allclose(random, state["layer1.0.conv1.weight"])


def test_localizer_encoder_starts_from_the_file(
    weights: tuple[dict[str, torch.Tensor], Path],
) -> None:
    state, path = weights
    cfg = load_config(
        "tiny",
        [
            f"localize.backbone={BACKBONE}",
            "localize.heatmap_stride=4",
            f"localize.pretrained={path}",
        ],
    )
    encoder = build_net(cfg.localize, SAGITTAL_CHANNELS).encoder
    torch.testing.assert_close(encoder.conv1[0].weight, state["conv1.0.weight"])  # 3 channels


def test_bad_weights_files_are_one_line_naming_them(
    weights: tuple[dict[str, torch.Tensor], Path], tmp_path: Path
) -> None:
    _, path = weights
    deeper = tmp_path / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), deeper)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not weights")
    cases = [
        (tmp_path / "missing.pth", "missing.pth not found"),
        (deeper, "resnet10t.pth: weights do not fit test_resnet"),
        (garbage, "garbage.safetensors: not a readable weights file"),
    ]
    for bad, message in cases:
        with pytest.raises(ConfigError) as err:
            create_backbone(BACKBONE, str(bad), num_classes=0)
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    # the file of a shallower network of the same family would load in part: refused too
    with pytest.raises(ConfigError, match="missing"):
        create_backbone("resnet14t", str(deeper), num_classes=0)


def test_check_pretrained_refuses_names_of_another_backbone_without_fetching() -> None:
    check_pretrained(False, "resnet18")
    check_pretrained("resnet18.a1_in1k", "resnet18")  # a tag of the backbone: would be fetched
    check_pretrained("hf-hub:timm/resnet18.a1_in1k", "resnet18")
    with pytest.raises(ConfigError, match="grade.pretrained: 'resnet34.a1_in1k' is neither"):
        check_pretrained("resnet34.a1_in1k", "resnet18", "grade.pretrained")


def test_pretrained_config_takes_a_bool_or_a_string_only() -> None:
    assert load_config("tiny", ["grade.pretrained=w/r18.pth"]).grade.pretrained == "w/r18.pth"
    assert load_config("tiny", ["grade.pretrained=true"]).grade.pretrained is True
    for bad in ("1", "[a]", "2.5"):
        with pytest.raises(ConfigError, match="expected true/false or str"):
            load_config("tiny", [f"grade.pretrained={bad}"])
