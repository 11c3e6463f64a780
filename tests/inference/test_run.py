"""`predict` end to end on a tiny run: a batch with bad studies, geometry of the reported points,
the exit status, the worker count."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from spinegrade.cli import app
from spinegrade.constants import AXIAL_T2, SEVERITIES, TARGETS, row_id
from spinegrade.cv.ensemble import FLAG_MISSING_SERIES, FLAG_PRIOR
from spinegrade.cv.folder import RunFolder
from spinegrade.inference import discover_studies, predict
from spinegrade.inference.discover import load_source


def _batch(tiny: dict[str, Path], dest: Path) -> dict[str, int]:
    """An images folder: a good study, the same study without its axial series, a corrupt one, an
    empty one."""
    images = tiny["data"] / "train_images"
    good = tiny["complete"]
    shutil.copytree(images / str(good), dest / str(good))
    shutil.copytree(images / str(good), dest / "900001")
    series = pd.read_csv(tiny["data"] / "train_series_descriptions.csv")
    axial = series[(series.study_id == good) & (series.series_description == AXIAL_T2)].series_id
    for sid in axial:
        shutil.rmtree(dest / "900001" / str(sid))
    (dest / "900002" / "7").mkdir(parents=True)
    for i in range(3):
        (dest / "900002" / "7" / f"{i + 1}.dcm").write_bytes(b"not a dicom file " * 20)
    (dest / "900003").mkdir()
    return {"good": good, "no_axial": 900001, "corrupt": 900002, "empty": 900003}


def test_predict_batch_with_bad_studies(tiny: dict[str, Path], tmp_path: Path) -> None:
    ids = _batch(tiny, tmp_path / "images")
    out = tmp_path / "out"
    result = predict(tiny["run"], tmp_path / "images", out, workers=2, progress=False)

    sub = pd.read_csv(out / "submission.csv")
    order = sorted(ids.values())
    assert list(sub.columns) == ["row_id", *SEVERITIES]
    assert sub.row_id.tolist() == [row_id(s, c, lv) for s in order for c, lv in TARGETS]
    probs = sub[list(SEVERITIES)].to_numpy()
    assert np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    errors = pd.read_csv(out / "errors.csv")
    assert sorted(errors.study_id) == [ids["corrupt"], ids["empty"]]
    assert "not a readable DICOM file" in errors.set_index("study_id").reason[ids["corrupt"]]
    assert result.exit_code == 0 and len(result.failed) == 2

    prior = RunFolder(tiny["run"]).prior(0)
    by_study = {s: probs[i * 25 : (i + 1) * 25] for i, s in enumerate(order)}
    np.testing.assert_allclose(
        by_study[ids["corrupt"]], prior, atol=1e-5
    )  # failed study: the prior
    sub_rows = [i for i, (c, _) in enumerate(TARGETS) if "subarticular" in c]
    np.testing.assert_allclose(by_study[ids["no_axial"]][sub_rows], prior[sub_rows], atol=1e-5)

    record = json.loads((out / "studies" / str(ids["no_axial"]) / "predictions.json").read_text())
    assert record["status"] == "ok" and len(record["targets"]) == 25
    for t in record["targets"]:
        if "subarticular" in t["condition"]:
            assert {FLAG_PRIOR, FLAG_MISSING_SERIES} <= set(t["flags"]) and t[
                "world_lps_mm"
            ] is None
        else:  # the sagittal targets are still located and graded
            assert FLAG_PRIOR not in t["flags"] and t["series_id"] is not None
    failed = json.loads((out / "studies" / str(ids["corrupt"]) / "predictions.json").read_text())
    assert failed["status"] == "failed" and "not a readable DICOM file" in failed["error"]

    good = out / "studies" / str(ids["good"])
    assert {p.name for p in good.glob("*.png")} == {
        "sagittal_t2.png",
        "sagittal_t1.png",
        "axial_t2.png",
    }
    html = (good / "report.html").read_text()
    for png in good.glob("*.png"):  # every overlay is embedded, byte for byte
        assert base64.b64encode(png.read_bytes()).decode() in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert not list((out / "studies" / str(ids["no_axial"])).glob("axial_t2.png"))
    assert (
        "could not be read" in (out / "studies" / str(ids["corrupt"]) / "report.html").read_text()
    )
    index = (out / "index.html").read_text()
    for s in order:
        assert f'href="studies/{s}/report.html"' in index


def test_reported_positions_follow_the_geometry(tiny: dict[str, Path], tmp_path: Path) -> None:
    """Each located target's world position is its pixel through the affine of the slice named."""
    good = tiny["data"] / "train_images" / str(tiny["complete"])
    out = tmp_path / "out"
    predict(tiny["run"], good, out, workers=0, tta=True, progress=False)  # a single study folder
    record = json.loads((out / "studies" / str(tiny["complete"]) / "predictions.json").read_text())
    study = load_source(discover_studies(good).studies[0])
    located = [t for t in record["targets"] if t["series_id"] is not None]
    assert (
        len(located) >= 15
    )  # every sagittal target; axial ones need an axial slice near the level
    for t in located:
        series = next(s for s in study.series if s.series_id == t["series_id"])
        vol = series.stacks[t["stack_index"]]
        assert vol.instance_numbers[t["slice_index"]] == t["instance_number"]
        expected = vol.voxel_to_world([[t["pixel"]["x"], t["pixel"]["y"], t["slice_index"]]])[0]
        np.testing.assert_allclose(t["world_lps_mm"], expected, atol=1e-6)
        assert t["series_type"] == series.series_type


def test_cli_exit_status_only_with_fail_on_error(tiny: dict[str, Path], tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(
        tiny["data"] / "train_images" / str(tiny["complete"]), images / str(tiny["complete"])
    )
    (images / "900003").mkdir()  # an empty study folder
    runner = CliRunner()
    args = ["predict", str(tiny["run"]), str(images), "--workers", "0"]
    ok = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    strict = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--fail-on-error"])
    assert strict.exit_code == 1, strict.output
    assert "900003" in strict.output
    assert len(pd.read_csv(tmp_path / "b" / "submission.csv")) == 50
    helptext = runner.invoke(app, ["predict", "--help"], terminal_width=200).output
    assert "--fail-on-error" in helptext and "errors.csv" in helptext


def test_default_workers_follow_the_core_count_and_the_batch() -> None:
    from spinegrade.inference.run import default_workers, model_threads

    # on 2 cores the forked worker pipeline measured 1.15x-1.69x the plain loop (docs/benchmarks.md)
    assert [default_workers(n) for n in (1, 2, 3, 4, 8, 16, 64)] == [0, 2, 2, 2, 4, 4, 4]
    assert default_workers(16, studies=1) == 0 and default_workers(16, studies=2) == 4
    # the models take the cores the workers leave; without workers, torch's own setting
    assert [model_threads(w, 8) for w in (0, 1, 4, 8)] == [0, 7, 4, 1]


def test_forked_workers_start_at_once(tiny: dict[str, Path], tmp_path: Path) -> None:
    images = tmp_path / "images"
    for sid in (tiny["complete"], 900001):
        shutil.copytree(tiny["data"] / "train_images" / str(tiny["complete"]), images / str(sid))
    result = predict(tiny["run"], images, tmp_path / "out", workers=2, progress=False)
    assert len(result.study_ids) == 2 and result.failed.empty
    # the first study reaches the model once it is read and the model is loaded: no interpreter
    # start-up in between (a forkserver importing pydicom, pandas and matplotlib took ~6 s)
    assert result.first_study_s < result.load_s + 3.0, (result.first_study_s, result.load_s)


def test_predict_with_cam_writes_a_map_per_graded_target(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    """`cam`: each graded target's PNG under cam/, referenced in predictions.json and shown in
    report.html; targets from the prior get none; without `cam` nothing of it."""
    images = tmp_path / "images"
    ids = _batch(tiny, images)
    shutil.rmtree(images / str(ids["corrupt"]))
    shutil.rmtree(images / str(ids["empty"]))
    out = tmp_path / "out"
    predict(tiny["run"], images, out, workers=2, progress=False, cam=True)  # drawn in workers
    no_axial = 0
    for sid in (ids["good"], ids["no_axial"]):
        folder = out / "studies" / str(sid)
        record = json.loads((folder / "predictions.json").read_text())
        assert record["model"]["cam"] is True
        made = [t for t in record["targets"] if t["cam"] is not None]
        for t in record["targets"]:
            assert (t["cam"] is None) == ("prior" in t["flags"]), t
            assert (t["cam_peak_mm"] is None) == (t["cam"] is None)
        for t in made:
            assert t["cam"] == f"cam/{t['row_id']}.png"
            png = Image.open(folder / t["cam"])
            assert png.mode == "RGB" and png.size[0] == 2 * png.size[1] + 4  # crop | gap | map
            assert 0 <= t["cam_peak_mm"] <= 40 / 2 * np.sqrt(2)  # inside the tiny run's crops
        assert sorted(p.name for p in (folder / "cam").iterdir()) == sorted(
            f"{t['row_id']}.png" for t in made
        )
        html = (folder / "report.html").read_text()
        assert "Grad-CAM maps" in html and html.count("Grad-CAM of ") == len(made)
        no_axial += sum(t["condition"].endswith("subarticular_stenosis") for t in made) == 0
    assert no_axial == 1  # the study without an axial series has no subarticular map
    plain = tmp_path / "plain"
    predict(tiny["run"], images / str(ids["good"]), plain, workers=0, progress=False)
    folder = plain / "studies" / str(ids["good"])
    record = json.loads((folder / "predictions.json").read_text())
    assert record["model"]["cam"] is False and not (folder / "cam").exists()
    assert all(t["cam"] is None for t in record["targets"])
    assert "Grad-CAM" not in (folder / "report.html").read_text()
