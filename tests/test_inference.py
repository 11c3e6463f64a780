"""Inference: study discovery, fold ensembling, and `predict` end to end on a tiny run.

The run is the session's `tiny` run (tests/conftest.py): 3 small synthetic studies, zero training
epochs (an untrained network is enough to check outputs, robustness and geometry; model quality is
measured by `spinegrade train` / `evaluate`, not here).
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from spinegrade.cli import app
from spinegrade.constants import AXIAL_T2, SEVERITIES, TARGETS, row_id
from spinegrade.dicom import read_header
from spinegrade.inference import discover_studies, predict, uid_to_id
from spinegrade.inference.discover import IMAGES, LOOSE, STUDY, load_source
from spinegrade.inference.models import FLAG_FOLDS_DISAGREE, FLAG_MISSING_SERIES, FLAG_PRIOR, combine
from spinegrade.localize.predict import LOCATION_COLUMNS


def _batch(tiny: dict[str, Path], dest: Path) -> dict[str, int]:
    """An images folder: a good study, the same study without its axial series, a corrupt one, an empty one."""
    images = tiny["data"] / "train_images"
    good = tiny["complete"]
    shutil.copytree(images / str(good), dest / str(good))
    shutil.copytree(images / str(good), dest / "900001")
    axial = pd.read_csv(tiny["data"] / "train_series_descriptions.csv").query(
        "study_id == @good and series_description == @AXIAL_T2").series_id
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

    prior = pd.read_csv(tiny["run"] / "prior.csv")[list(SEVERITIES)].to_numpy()
    by_study = {s: probs[i * 25:(i + 1) * 25] for i, s in enumerate(order)}
    np.testing.assert_allclose(by_study[ids["corrupt"]], prior, atol=1e-5)  # failed study: the prior
    sub_rows = [i for i, (c, _) in enumerate(TARGETS) if "subarticular" in c]
    np.testing.assert_allclose(by_study[ids["no_axial"]][sub_rows], prior[sub_rows], atol=1e-5)

    record = json.loads((out / "studies" / str(ids["no_axial"]) / "predictions.json").read_text())
    assert record["status"] == "ok" and len(record["targets"]) == 25
    for t in record["targets"]:
        if "subarticular" in t["condition"]:
            assert {FLAG_PRIOR, FLAG_MISSING_SERIES} <= set(t["flags"]) and t["world_lps_mm"] is None
        else:  # the sagittal targets are still located and graded
            assert FLAG_PRIOR not in t["flags"] and t["series_id"] is not None
    failed = json.loads((out / "studies" / str(ids["corrupt"]) / "predictions.json").read_text())
    assert failed["status"] == "failed" and "not a readable DICOM file" in failed["error"]

    good = out / "studies" / str(ids["good"])
    assert {p.name for p in good.glob("*.png")} == {"sagittal_t2.png", "sagittal_t1.png", "axial_t2.png"}
    html = (good / "report.html").read_text()
    for png in good.glob("*.png"):  # every overlay is embedded, byte for byte
        assert base64.b64encode(png.read_bytes()).decode() in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert not list((out / "studies" / str(ids["no_axial"])).glob("axial_t2.png"))
    assert "could not be read" in (out / "studies" / str(ids["corrupt"]) / "report.html").read_text()
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
    assert len(located) >= 15  # every sagittal target; axial ones need an axial slice near the level
    for t in located:
        series = next(s for s in study.series if s.series_id == t["series_id"])
        vol = series.stacks[t["stack_index"]]
        assert vol.instance_numbers[t["slice_index"]] == t["instance_number"]
        expected = vol.voxel_to_world([[t["pixel"]["x"], t["pixel"]["y"], t["slice_index"]]])[0]
        np.testing.assert_allclose(t["world_lps_mm"], expected, atol=1e-6)
        assert t["series_type"] == series.series_type


def test_cli_exit_status_only_with_fail_on_error(tiny: dict[str, Path], tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(tiny["data"] / "train_images" / str(tiny["complete"]), images / str(tiny["complete"]))
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


def test_loose_files_are_grouped_by_uid(tiny: dict[str, Path], tmp_path: Path) -> None:
    """Files of two studies mixed in one folder tree with meaningless names: grouped by UID."""
    images = tiny["data"] / "train_images"
    studies = sorted(int(d.name) for d in images.iterdir())[:2]
    loose = tmp_path / "dump"
    files = sorted(p for s in studies for p in (images / str(s)).rglob("*.dcm"))
    rng = np.random.default_rng(0)
    for i, j in enumerate(rng.permutation(len(files))):
        dest = loose / ("a" if i % 2 else "b/c") / f"img{i:04d}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[j], dest)
    (loose / "README.txt").write_text("not DICOM")

    found = discover_studies(loose)
    assert found.layout == LOOSE
    assert [p.name for p, _ in found.ignored] == ["README.txt"]
    uids = {read_header(next((images / str(s)).rglob("*.dcm"))).study_uid: s for s in studies}
    assert sorted(s.study_id for s in found.studies) == sorted(uid_to_id(u) for u in uids)
    for source in found.studies:
        study = load_source(source)
        original = next(s for u, s in uids.items() if uid_to_id(u) == source.study_id)
        expected = load_source(discover_studies(images / str(original)).studies[0])
        assert sorted(s.series_type for s in study.series) == sorted(s.series_type for s in expected.series)
        for s in study.series:  # same stacks, same slice order, whatever the file names
            twin = next(e for e in expected.series if e.stacks[0].meta.series_uid == s.stacks[0].meta.series_uid)
            assert [v.shape for v in s.stacks] == [v.shape for v in twin.stacks]
            for a, b in zip(s.stacks, twin.stacks):
                np.testing.assert_array_equal(a.instance_numbers, b.instance_numbers)
                np.testing.assert_array_equal(a.pixels, b.pixels)
                np.testing.assert_allclose(a.affine, b.affine)


def test_layouts_and_study_ids(tiny: dict[str, Path], tmp_path: Path) -> None:
    images = tiny["data"] / "train_images"
    found = discover_studies(images)
    assert found.layout == IMAGES
    assert [s.study_id for s in found.studies] == sorted(int(d.name) for d in images.iterdir())
    assert found.series_descriptions is not None  # train_series_descriptions.csv beside train_images/
    one = discover_studies(images / str(tiny["complete"]))
    assert one.layout == STUDY and [s.study_id for s in one.studies] == [tiny["complete"]]
    named = tmp_path / "patient_a"  # a study folder whose name is not a number: id from the UID
    shutil.copytree(images / str(tiny["complete"]), named)
    uid = read_header(next(named.rglob("*.dcm"))).study_uid
    assert [s.study_id for s in discover_studies(named).studies] == [uid_to_id(uid)]
    assert uid_to_id(uid) == uid_to_id(uid) and 0 <= uid_to_id(uid) < 2**32
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="empty"):
        discover_studies(empty)


def _points(world: np.ndarray | None) -> pd.DataFrame:
    """A location table whose every target sits at `world` (None: nothing located)."""
    rows = []
    for c, lv in TARGETS:
        if world is None:
            rows.append((1, None, None, c, lv, np.nan, np.nan, None, None, np.nan, np.nan, np.nan, 0.0, "", "no series"))
        else:
            rows.append((1, 5, 3, c, lv, 10.0, 20.0, 0, 2, *world, 0.9, "sagittal_t2", ""))
    return pd.DataFrame(rows, columns=list(LOCATION_COLUMNS))


def test_combine_means_graded_folds_and_falls_back_to_prior(tiny: dict[str, Path]) -> None:
    study = load_source(discover_studies(tiny["data"] / "train_images" / str(tiny["complete"])).studies[0])
    prior = np.tile([0.7, 0.2, 0.1], (25, 1))
    probs = np.full((3, 25, 3), np.nan)
    probs[0, 0], probs[1, 0] = [0.2, 0.3, 0.5], [0.4, 0.5, 0.1]  # target 0: two folds graded it
    probs[2, 1] = [0.1, 0.1, 0.8]  # target 1: one fold
    points = [_points(np.array([0.0, 0.0, 0.0])), _points(np.array([0.0, 3.0, 4.0])),
              _points(np.array([0.0, 30.0, 40.0]))]
    pred = combine(1, study, points, probs, prior)
    np.testing.assert_allclose(pred.probs[0], [0.3, 0.4, 0.3])
    np.testing.assert_allclose(pred.probs[1], [0.1, 0.1, 0.8])
    np.testing.assert_allclose(pred.probs[2:], prior[2:])
    t = pred.targets
    assert t.folds_graded.tolist()[:3] == [2, 1, 0]
    assert FLAG_PRIOR in t["flags"][2] and FLAG_PRIOR not in t["flags"][0]
    # the medoid is the middle fold's point; the farthest fold is 50 mm from it
    assert (t.world_y[0], t.world_z[0]) == (3.0, 4.0) and t.spread_mm[0] == pytest.approx(np.hypot(27, 36))
    assert FLAG_FOLDS_DISAGREE in t["flags"][0]
    nothing = combine(1, study, [_points(None)], np.full((1, 25, 3), np.nan), prior)
    assert nothing.targets.series_id.isna().all() and (nothing.targets.reason == "no series").all()


def test_ensemble_calibrates_each_graded_row_with_its_groups_temperature() -> None:
    from spinegrade.grade.calibrate import apply_temperature
    from spinegrade.inference.models import Ensemble

    ens = Ensemble([], np.full((25, 3), 1 / 3), torch.device("cpu"),
                   {"spinal": 2.0, "foraminal": 1.0, "subarticular": 0.5})
    probs = np.tile([0.7, 0.2, 0.1], (25, 1))
    probs[3] = np.nan  # a spinal target that was not graded stays NaN
    out = ens.calibrate(probs)
    spinal = [t for t, (c, _) in enumerate(TARGETS) if c == "spinal_canal_stenosis"]
    sub = [t for t, (c, _) in enumerate(TARGETS) if c.endswith("subarticular_stenosis")]
    np.testing.assert_allclose(out[spinal[0]], apply_temperature(probs[:1], 2.0)[0])
    np.testing.assert_allclose(out[sub], apply_temperature(probs[sub], 0.5))
    assert np.isnan(out[3]).all() and 3 in spinal
    foramen = [t for t, (c, _) in enumerate(TARGETS) if "foraminal" in c]
    np.testing.assert_allclose(out[foramen], probs[foramen])


def test_default_workers_follow_the_core_count() -> None:
    from spinegrade.inference.run import default_workers

    # on 2 cores the worker pipeline measured slower than one process (docs/benchmarks.md)
    assert [default_workers(n) for n in (1, 2, 3, 4, 8, 16, 64)] == [0, 0, 1, 2, 4, 4, 4]
