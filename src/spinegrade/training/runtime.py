"""The networks behind one interface: numpy arrays in, a float32 numpy array out.

A stage holds its networks as `Net`s and never asks which engine runs them:

- `TorchNet`: a torch module in eval mode on its device, under `torch.inference_mode`;
- `OnnxNet`: an ONNX Runtime session (the CUDA execution provider when asked for and present,
  else the CPU one), from a file written by `export_onnx`.

`export_onnx` writes a module as ONNX with a dynamic batch dimension (opset `OPSET`).
onnx and onnxruntime are imported only when used.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from spinegrade.errors import ConfigError, DataError
from spinegrade.io import write_with

#: ONNX opset of exported networks.
OPSET = 18
CPU_PROVIDER, CUDA_PROVIDER = "CPUExecutionProvider", "CUDAExecutionProvider"


class Net(Protocol):
    """A network: `net(*inputs)` -> its (first) output as float32 numpy."""

    def __call__(self, *inputs: np.ndarray) -> np.ndarray: ...


class TorchNet:
    """A torch module as a `Net` (eval mode, on `device`; `channels_last` for 4D-input CNNs)."""

    def __init__(
        self, module: nn.Module, device: torch.device, *, channels_last: bool = False
    ) -> None:
        self.device = device
        self.channels_last = channels_last
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(device, memory_format=fmt).eval()

    @torch.inference_mode()
    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in inputs]
        if self.channels_last:
            tensors = [
                t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                for t in tensors
            ]
        return self.module(*tensors).float().cpu().numpy()


def as_net(net: nn.Module | Net, device: torch.device, *, channels_last: bool = False) -> Net:
    """`net` itself when it already is a `Net`, else the module wrapped in a `TorchNet`."""
    if isinstance(net, nn.Module):
        return TorchNet(net, device, channels_last=channels_last)
    return net


def onnx_providers(device: torch.device) -> list[str]:
    """Execution providers for `device`: CUDA first when asked for and available, then CPU."""
    import onnxruntime as ort

    if device.type == "cuda":
        if CUDA_PROVIDER not in ort.get_available_providers():
            raise ConfigError(
                f"device {device} asked for with the ONNX engine, but this onnxruntime has no "
                f"{CUDA_PROVIDER} (install onnxruntime-gpu)"
            )
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def _load_errors() -> tuple[type[Exception], ...]:
    """What onnxruntime raises for a file it cannot load (its own classes, not RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidProtobuf", "InvalidGraph", "InvalidArgument", "NoSuchFile")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


class OnnxNet:
    """An ONNX Runtime session as a `Net`; inputs are given in the graph's input order.

    `threads` intra-op threads (default: torch's thread count, so that one setting rules both
    engines); one inter-op thread; threads do not spin while idle, which keeps them from taking
    cores from the worker processes and other programs.
    """

    def __init__(self, path: str | Path, device: torch.device, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: ONNX network not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        load_errors = _load_errors()
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=onnx_providers(device)
            )
        except load_errors as exc:
            raise DataError(f"{path}: not a loadable ONNX network ({_first_line(exc)})") from None
        self.path = path
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        feed = dict(zip(self.inputs, inputs))
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


def export_onnx(
    module: nn.Module,
    example: Sequence[torch.Tensor],
    path: str | Path,
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> Path:
    """Write `module` (eval mode, on CPU) as ONNX to `path`, atomically; dimension 0 of every
    input and output is the dynamic `batch`.

    The TorchScript-based exporter is used (`dynamo=False`): on the demo's networks it took 7 s
    per network on a loaded 2-core machine, the torch.export-based one 43-66 s, for outputs equal
    to within 3e-6.
    """
    module = module.cpu().eval()
    axes = {name: {0: "batch"} for name in (*inputs, *outputs)}

    def write(tmp: Path) -> None:
        fastpath = torch.backends.mha.get_fastpath_enabled()
        # the fused transformer-layer kernel has no ONNX form: trace the plain layer instead
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            _export(tmp)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)

    def _export(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and trace notes
            torch.onnx.export(
                module,
                tuple(example),
                str(tmp),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )

    return write_with(path, write)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["OPSET", "Net", "OnnxNet", "TorchNet", "as_net", "export_onnx", "onnx_providers"]
