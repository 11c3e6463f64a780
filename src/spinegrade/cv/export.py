"""ONNX export of a run folder's networks, and the manifest that ties them to that folder.

`export_run(RUN, OUT)` writes, for every complete fold k, `fold_<k>_sagittal.onnx`,
`fold_<k>_axial.onnx` (the localiser's heatmap networks) and `fold_<k>_grader.onnx` (the grader,
through `grade.export.ExportGrader`), each with a dynamic batch size, and `manifest.json`:

- `fingerprint`: `RunFolder.fingerprint(folds)` of the run folder at export time (config,
  calibration, priors and checkpoints), `run_dir`, `folds`, the run's resolved `config`;
- per fold, the localiser's config and the grader's crop geometry (what the shared decoding and
  cropping need) and, per network, its file and its inputs' and outputs' names, shapes (`batch`
  for the dynamic size) and element types;
- the versions of spinegrade, torch, onnx and the opset.

`onnx_folds(RUN, OUT, folds)` loads them back, after refusing (one line) a manifest whose
fingerprint is not the run folder's: the networks would not be the run's. The rest of
prediction (decoding, cropping, combining, calibration) is the torch engine's own code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from spinegrade import __version__
from spinegrade.config import LocalizeConfig, from_dict, to_dict
from spinegrade.constants import SEVERITIES
from spinegrade.cv.folder import RunFolder
from spinegrade.errors import DataError
from spinegrade.grade.dataset import CropParams
from spinegrade.grade.export import GRADER_INPUTS, GRADER_OUTPUTS, ExportGrader
from spinegrade.grade.predict import Grader, load_grader_net
from spinegrade.io import write_json
from spinegrade.localize.predict import Localizer, load_heatmap_nets
from spinegrade.training.runtime import OPSET, OnnxNet, export_onnx

MANIFEST_JSON = "manifest.json"
#: Version of the manifest's layout.
MANIFEST_FORMAT = 1
SAGITTAL, AXIAL, GRADER = "sagittal", "axial", "grader"
HEATMAP_INPUTS, HEATMAP_OUTPUTS = ("images",), ("logits",)
#: Slices in the example batch the networks are traced with (any batch size runs afterwards).
EXAMPLE_BATCH = 2


def network_file(k: int, name: str) -> str:
    """`fold_<k>_<name>.onnx`."""
    return f"fold_{int(k)}_{name}.onnx"


@dataclass(frozen=True)
class FoldNets:
    """One fold's exported networks and what prediction needs besides them."""

    sagittal: OnnxNet
    axial: OnnxNet
    grader: OnnxNet
    localize: LocalizeConfig
    crop: CropParams

    def localizer(self, device: torch.device) -> Localizer:
        return Localizer(self.sagittal, self.axial, self.localize, device)

    def grade(self, device: torch.device) -> Grader:
        return Grader(self.grader, self.crop, device)


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, folds: Sequence[int] | None = None
) -> Path:
    """Export the complete folds (or `folds`) of `run_dir` into `out_dir`; returns the manifest."""
    import onnx

    run, out = RunFolder(run_dir), Path(out_dir)
    run.check()
    done = run.chosen_folds(folds)
    entries = {}
    for k in done:
        sagittal, axial, localize = load_heatmap_nets(run.localizer_dir(k))
        grader, crop = load_grader_net(run.grader_model(k))
        size = localize.image_size
        images = torch.zeros(EXAMPLE_BATCH, sagittal.spec.in_chans, size, size)
        n = len(grader.slots)  # crop slots: one per target with the default views
        crops = torch.zeros(EXAMPLE_BATCH, n, crop.slices, crop.crop_px, crop.crop_px)
        valid = torch.ones(EXAMPLE_BATCH, n, dtype=torch.bool)
        nets = {
            SAGITTAL: (sagittal, (images,), HEATMAP_INPUTS, HEATMAP_OUTPUTS),
            AXIAL: (axial, (images,), HEATMAP_INPUTS, HEATMAP_OUTPUTS),
            GRADER: (ExportGrader(grader), (crops, valid), GRADER_INPUTS, GRADER_OUTPUTS),
        }
        entries[str(k)] = {
            "localize": to_dict(localize),
            "crop": asdict(crop),
            "networks": {
                name: _export(module, example, out / network_file(k, name), ins, outs)
                for name, (module, example, ins, outs) in nets.items()
            },
        }
    return write_json(
        out / MANIFEST_JSON,
        {
            "format": MANIFEST_FORMAT,
            "run_dir": str(run.path.resolve()),
            "fingerprint": run.fingerprint(done),
            "folds": done,
            "config": to_dict(run.config()),
            "classes": list(SEVERITIES),
            "fold_networks": entries,
            "versions": {
                "spinegrade": __version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "opset": OPSET,
            },
        },
    )


def read_manifest(run: RunFolder, onnx_dir: str | Path) -> dict[str, Any]:
    """`onnx_dir`'s manifest, after checking it was exported from `run` as it is now."""
    path = Path(onnx_dir) / MANIFEST_JSON
    if not path.is_file():
        raise DataError(
            f"{path}: no ONNX manifest (export with `spinegrade export RUN --onnx DIR`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        folds = [int(k) for k in manifest["folds"]]
        fingerprint = str(manifest["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable ONNX manifest ({exc})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(
            f"{path}: manifest format {manifest.get('format')}, this spinegrade reads "
            f"{MANIFEST_FORMAT}; export again"
        )
    if fingerprint != run.fingerprint(folds):
        raise DataError(
            f"{path}: exported from another state of a run folder than {run.path} (fingerprint "
            f"{fingerprint[:12]} != {run.fingerprint(folds)[:12]}); export again"
        )
    return manifest


def onnx_folds(
    run: RunFolder,
    onnx_dir: str | Path,
    folds: Sequence[int],
    device: torch.device,
    threads: int | None = None,
) -> list[FoldNets]:
    """The exported networks of `folds` (each must be in the manifest), as ONNX Runtime nets."""
    manifest = read_manifest(run, onnx_dir)
    entries = manifest["fold_networks"]
    missing = [k for k in folds if str(k) not in entries]
    if missing:
        raise DataError(
            f"{Path(onnx_dir) / MANIFEST_JSON}: fold(s) {missing} not exported "
            f"(exported: {manifest['folds']})"
        )
    out = []
    for k in folds:
        entry = entries[str(k)]
        nets = {
            name: OnnxNet(Path(onnx_dir) / net["file"], device, threads)
            for name, net in entry["networks"].items()
        }
        out.append(
            FoldNets(
                nets[SAGITTAL],
                nets[AXIAL],
                nets[GRADER],
                from_dict(LocalizeConfig, entry["localize"]),
                CropParams(**entry["crop"]),
            )
        )
    return out


def _export(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    inputs: Sequence[str],
    outputs: Sequence[str],
) -> dict[str, Any]:
    """Export one network; its manifest entry: file, inputs and outputs with shapes (`batch`,
    then the example's sizes, which the export fixes) and element types."""
    export_onnx(module, example, path, inputs, outputs)
    with torch.no_grad():
        result = module.eval()(*example)
    results = result if isinstance(result, tuple) else (result,)
    return {
        "file": path.name,
        "inputs": [_tensor_info(n, t) for n, t in zip(inputs, example)],
        "outputs": [_tensor_info(n, t) for n, t in zip(outputs, results)],
    }


def _tensor_info(name: str, tensor: torch.Tensor) -> dict[str, Any]:
    """Name, shape (`batch` for the dynamic first dimension) and element type of a tensor."""
    return {
        "name": name,
        "shape": ["batch", *tensor.shape[1:]],
        "dtype": str(tensor.dtype).removeprefix("torch."),
    }
