"""ONNX export of a run and the two engines: on a tiny trained run the ONNX engine gives the torch
engine's probabilities (within 1e-4) and points (within 0.1 pixel); the torch engine still gives
what the code before the engine seam gave; a manifest that is not the run folder's is refused in
one line, by the API and the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import spinegrade.localize.dataset as dataset
from spinegrade.cli import app
from spinegrade.constants import TARGETS
from spinegrade.cv.ensemble import ONNX, Ensemble
from spinegrade.cv.export import MANIFEST_JSON, export_run
from spinegrade.cv.folder import PRIOR_CSV, RunFolder
from spinegrade.errors import DataError
from spinegrade.grade.model import GraderNet
from spinegrade.inference.discover import discover_studies, load_source
from spinegrade.localize.dataset import PERCENTILE_PIXELS
from spinegrade.training.runtime import OnnxNet
from tests.conftest import build_tiny_run
from tests.cv.test_folder import _cli


@pytest.fixture(scope="module")
def trained(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The `tiny` studies, a run trained on them for 2 epochs (outputs not degenerate: the
    grader's probabilities spread), exported to `RUN/onnx`."""
    out = build_tiny_run(tmp_path_factory.mktemp("trained"), epochs=2, data=tiny["data"])
    export_run(out["run"], RunFolder(out["run"]).onnx_dir())
    return out


def _studies(trained: dict[str, Path]) -> list:
    return [load_source(s) for s in discover_studies(trained["data"] / "train_images").studies]


def test_the_manifest_ties_the_networks_to_the_run(trained: dict[str, Path]) -> None:
    run = RunFolder(trained["run"])
    manifest = json.loads((run.onnx_dir() / MANIFEST_JSON).read_text())
    assert manifest["fingerprint"] == run.fingerprint([0]) and manifest["folds"] == [0]
    assert manifest["config"]["localize"]["image_size"] == 64
    assert manifest["versions"]["opset"] >= 17 and manifest["versions"]["onnx"]
    nets = manifest["fold_networks"]["0"]["networks"]
    assert set(nets) == {"sagittal", "axial", "grader"}
    for net in nets.values():  # the names are the graph's own, in its order
        graph = OnnxNet(run.onnx_dir() / net["file"], torch.device("cpu")).session
        assert [i.name for i in graph.get_inputs()] == [i["name"] for i in net["inputs"]]
        assert [o.name for o in graph.get_outputs()] == [o["name"] for o in net["outputs"]]
    sagittal, grader = nets["sagittal"], nets["grader"]
    assert sagittal["inputs"] == [
        {"name": "images", "shape": ["batch", 3, 64, 64], "dtype": "float32"}
    ]
    assert sagittal["outputs"][0]["shape"] == ["batch", 10, 16, 16]
    assert [(i["name"], i["shape"], i["dtype"]) for i in grader["inputs"]] == [
        ("crops", ["batch", len(TARGETS), 3, 24, 24], "float32"),
        ("valid", ["batch", len(TARGETS)], "bool"),
    ]
    assert grader["outputs"][0]["shape"] == ["batch", len(TARGETS), 3]


def test_the_engines_agree(trained: dict[str, Path]) -> None:
    torch_engine = Ensemble.load(trained["run"], device="cpu")
    onnx_engine = Ensemble.load(trained["run"], device="cpu", engine=ONNX)
    spread = []
    for study in _studies(trained):
        a, b = torch_engine.predict(study), onnx_engine.predict(study)
        np.testing.assert_allclose(b.probs, a.probs, atol=1e-4)
        where = ["series_id", "stack_index", "slice_index"]
        pd.testing.assert_frame_equal(a.targets[where], b.targets[where])
        xy = ["x", "y"]
        np.testing.assert_allclose(
            b.targets[xy].to_numpy(float), a.targets[xy].to_numpy(float), atol=0.1
        )
        spread.append(a.probs[a.targets.folds_graded.to_numpy() > 0].std(axis=0))
    assert np.min(spread) > 0.01  # graded, and not one answer for every target


def test_onnx_engine_maps_come_from_the_torch_checkpoints(trained: dict[str, Path]) -> None:
    """ONNX Runtime gives no gradients: with `cam` the ONNX engine loads each fold's torch grader,
    and its maps are the torch engine's (the crops are cut at points within 0.1 pixel)."""
    torch_engine = Ensemble.load(trained["run"], device="cpu", cam=True)
    onnx_engine = Ensemble.load(trained["run"], device="cpu", engine=ONNX, cam=True)
    assert isinstance(onnx_engine.folds[0].grader.net, OnnxNet)
    assert isinstance(onnx_engine.folds[0].cam_net, GraderNet)
    study = _studies(trained)[0]
    a, b = torch_engine.predict(study, cam=True), onnx_engine.predict(study, cam=True)
    graded = a.targets.row_id[a.targets.folds_graded > 0]
    assert set(a.cams) == set(b.cams) == set(graded) and len(graded) > 0
    for row in a.cams:
        np.testing.assert_allclose(b.cams[row].heat, a.cams[row].heat, atol=0.02)
    assert "cam" in a.timing.wall and not Ensemble.load(trained["run"]).predict(study).cams


def _before_prepare(volume, size, slices=None, window=None):  # type: ignore[no-untyped-def]
    """`prepare_stack` as it was before the engine seam (float64 arithmetic, whole stacks)."""
    px = volume.pixels.astype(np.float32)
    step = max(1, int(np.ceil(np.sqrt(px.size / PERCENTILE_PIXELS))))
    lo, hi = np.percentile(px[:, ::step, ::step], [1.0, 99.5])
    px = np.clip((px - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    t = torch.from_numpy(px)[:, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    out = t[:, 0].numpy().astype(np.float16)
    return out if slices is None else out[np.asarray(slices)]


class _PlainCall:
    """A module called as before the engine seam: contiguous tensors under `no_grad`."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.module(*(torch.from_numpy(a) for a in inputs)).float().numpy()


def test_the_torch_engine_gives_what_it_gave_before(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = Ensemble.load(trained["run"], device="cpu")
    after = [now.predict(s) for s in _studies(trained)]
    before_engine = Ensemble.load(trained["run"], device="cpu")
    for f in before_engine.folds:
        loc = f.localizer
        loc.sagittal, loc.axial = _PlainCall(loc.sagittal.module), _PlainCall(loc.axial.module)
        f.grader.net = _PlainCall(f.grader.net.module)
    monkeypatch.setattr(dataset, "prepare_stack", _before_prepare)
    before = [before_engine.predict(s) for s in _studies(trained)]
    for a, b in zip(after, before):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
        pd.testing.assert_series_equal(a.targets.slice_index, b.targets.slice_index)
        xy = ["x", "y"]
        np.testing.assert_allclose(
            a.targets[xy].to_numpy(float), b.targets[xy].to_numpy(float), atol=0.01
        )


def test_a_manifest_of_another_run_state_is_refused(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    changed = tmp_path / "run"
    shutil.copytree(trained["run"], changed, ignore=shutil.ignore_patterns("onnx"))
    prior = pd.read_csv(changed / "fold_0" / PRIOR_CSV)
    prior.loc[0, "normal_mild"] -= 0.01
    prior.to_csv(changed / "fold_0" / PRIOR_CSV, index=False)
    onnx_dir = RunFolder(trained["run"]).onnx_dir()
    with pytest.raises(DataError, match="fingerprint") as err:
        Ensemble.load(changed, device="cpu", engine=ONNX, onnx_dir=onnx_dir)
    assert "\n" not in str(err.value) and "export again" in str(err.value)
    with pytest.raises(DataError, match="no ONNX manifest"):
        Ensemble.load(changed, device="cpu", engine=ONNX)  # RUN/onnx was not copied


def test_cli_export_and_predict_with_either_engine(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    runner = CliRunner()
    onnx_dir = tmp_path / "onnx"
    res = runner.invoke(app, ["export", str(trained["run"]), "--onnx", str(onnx_dir)])
    assert res.exit_code == 0, res.output
    assert (onnx_dir / MANIFEST_JSON).is_file()
    study = trained["data"] / "train_images" / str(trained["complete"])
    subs = {}
    for engine, extra in (("torch", []), ("onnx", ["--onnx-dir", str(onnx_dir)])):
        out = tmp_path / engine
        args = ["predict", str(trained["run"]), str(study), "-o", str(out), "--workers", "0"]
        res = runner.invoke(app, [*args, "--engine", engine, *extra])
        assert res.exit_code == 0, res.output
        subs[engine] = pd.read_csv(out / "submission.csv")
        record = json.loads(next((out / "studies").glob("*/predictions.json")).read_text())
        assert record["model"]["engine"] == engine
    cols = ["normal_mild", "moderate", "severe"]
    np.testing.assert_allclose(subs["onnx"][cols], subs["torch"][cols], atol=1e-4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--engine", "tensorflow"], "engine 'tensorflow'"),
        (["--onnx-dir", "x"], "--onnx-dir goes with --engine onnx"),
        (["--engine", "onnx", "--onnx-dir", "nowhere"], "no ONNX manifest"),
    ],
)
def test_cli_engine_mistakes_are_one_line(
    trained: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    study = trained["data"] / "train_images" / str(trained["complete"])
    args = ["predict", trained["run"], study, "-o", tmp_path / "o", "--workers", "0", *extra]
    code, err = _cli(args, monkeypatch, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_run_grading_the_canal_from_both_views_exports_and_its_engines_agree(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    out = build_tiny_run(tmp_path, data=tiny["data"], overrides=["grade.views.spinal=both"])
    run = RunFolder(out["run"])
    export_run(out["run"], run.onnx_dir())
    entry = json.loads((run.onnx_dir() / MANIFEST_JSON).read_text())["fold_networks"]["0"]
    assert entry["crop"]["views"]["spinal"] == "both"
    slots = len(TARGETS) + 5  # the canal's five levels have an axial crop too
    assert entry["networks"]["grader"]["inputs"][0]["shape"] == ["batch", slots, 3, 24, 24]
    torch_engine = Ensemble.load(out["run"], device="cpu")
    onnx_engine = Ensemble.load(out["run"], device="cpu", engine=ONNX)
    assert torch_engine.folds[0].grader.slots.view[:2] == ("sagittal", "axial")
    for study in _studies(out):
        a, b = torch_engine.predict(study), onnx_engine.predict(study)
        np.testing.assert_allclose(b.probs, a.probs, atol=1e-4)
        assert (a.targets.folds_graded == b.targets.folds_graded).all()
