"""The networks behind one interface: a torch module and its ONNX export give the same outputs for
any batch size, and what cannot be loaded says so in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spinegrade.errors import ConfigError, DataError
from spinegrade.training.runtime import OPSET, OnnxNet, TorchNet, as_net, export_onnx


class Toy(nn.Module):
    """A small CNN with batch norm (eval mode) and a mask input, like the project's networks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x)) * keep[:, None, None, None].to(x.dtype)


@pytest.fixture(scope="module")
def toy() -> Toy:
    torch.manual_seed(0)
    net = Toy()
    with torch.no_grad():  # non-trivial running statistics, so eval-mode batch norm matters
        net.conv[1].running_mean.uniform_(-1, 1)
        net.conv[1].running_var.uniform_(0.5, 2)
    return net.eval()


def test_onnx_export_matches_torch_for_every_batch_size(toy: Toy, tmp_path: Path) -> None:
    path = export_onnx(
        toy,
        (torch.zeros(2, 3, 16, 16), torch.ones(2, dtype=torch.bool)),
        tmp_path / "toy.onnx",
        ("images", "keep"),
        ("out",),
    )
    import onnx

    model = onnx.load(str(path))
    assert model.opset_import[0].version == OPSET
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim][:1] == ["batch"]
    torch_net, onnx_net = TorchNet(toy, torch.device("cpu")), OnnxNet(path, torch.device("cpu"))
    rng = np.random.default_rng(0)
    for n in (1, 5):
        x = rng.normal(size=(n, 3, 16, 16)).astype(np.float32)
        keep = rng.random(n) > 0.3
        a, b = torch_net(x, keep), onnx_net(x, keep)
        assert a.shape == b.shape == (n, 2, 16, 16) and b.dtype == np.float32
        np.testing.assert_allclose(b, a, atol=1e-5)
        assert not np.any(a[~keep])  # the mask input is honoured, not traced as a constant


def test_channels_last_changes_nothing_but_the_layout(toy: Toy) -> None:
    x = np.random.default_rng(1).normal(size=(3, 3, 16, 16)).astype(np.float32)
    keep = np.ones(3, dtype=bool)
    with torch.no_grad():
        plain = toy(torch.from_numpy(x), torch.from_numpy(keep)).numpy()
    last = TorchNet(_copy(toy), torch.device("cpu"), channels_last=True)
    np.testing.assert_allclose(last(x, keep), plain, atol=1e-5)


def _copy(net: Toy) -> Toy:
    other = Toy()
    other.load_state_dict(net.state_dict())
    return other.eval()


def test_as_net_wraps_modules_and_keeps_nets(toy: Toy, tmp_path: Path) -> None:
    assert isinstance(as_net(toy, torch.device("cpu")), TorchNet)
    path = export_onnx(
        toy,
        (torch.zeros(1, 3, 8, 8), torch.ones(1, dtype=torch.bool)),
        tmp_path / "t.onnx",
        ("images", "keep"),
        ("out",),
    )
    net = OnnxNet(path, torch.device("cpu"), threads=1)
    assert as_net(net, torch.device("cpu")) is net


def test_missing_or_broken_network_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ONNX network not found") as err:
        OnnxNet(tmp_path / "absent.onnx", torch.device("cpu"))
    assert "\n" not in str(err.value)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf" * 10)
    with pytest.raises(DataError, match="not a loadable ONNX network") as err:
        OnnxNet(tmp_path / "junk.onnx", torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_cuda_without_the_cuda_provider_is_refused(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    from spinegrade.training.runtime import onnx_providers

    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        onnx_providers(torch.device("cuda"))
