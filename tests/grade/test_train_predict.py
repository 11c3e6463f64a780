"""A tiny training run learns the visible severities; the saved grader predicts (25, 3) per
study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.config import load_config
from spinegrade.constants import SEVERITIES, TARGETS, row_id
from spinegrade.data.tables import load_tables
from spinegrade.dicom import load_study
from spinegrade.grade import Grader, train_grader
from spinegrade.grade.augment import random_jitter
from spinegrade.grade.crops import crop_2p5d
from spinegrade.grade.dataset import GradeDataset, locate_targets, patch
from spinegrade.grade.train import augment_params, crop_params, iter_studies
from spinegrade.metrics import constant_prior_submission, score

from .conftest import MEMORISE, NO_AXIAL, TRAIN, grader_config


def _submission(grader: Grader, root: Path, ids: list[int]) -> pd.DataFrame:
    tables = load_tables(root)
    coords = tables.coordinates
    rows = []
    for sid in ids:
        probs = grader.predict(
            load_study(root / "train_images" / str(sid)), coords[coords.study_id == sid]
        )
        probs = np.where(np.isnan(probs), 1 / 3, probs)
        rows += [
            {"row_id": row_id(sid, c, lv), **dict(zip(SEVERITIES, p))}
            for (c, lv), p in zip(TARGETS, probs)
        ]
    return pd.DataFrame(rows)


@pytest.mark.slow  # trains the tiny grader once per module (~20 s of CPU)
def test_tiny_training_beats_the_constant_prior_on_its_training_studies(
    trained: Path, grade_data: Path
) -> None:
    labels = load_tables(grade_data).labels
    train_labels = labels[labels.study_id.isin(TRAIN)]
    model = score(train_labels, _submission(Grader.load(trained), grade_data, TRAIN)).score
    prior = score(train_labels, constant_prior_submission(train_labels)).score
    assert model < 0.8 * prior, (model, prior)
    history = torch.load(trained, weights_only=False)["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"] and "val_loss" in history[-1]


@pytest.mark.slow  # trains the tiny grader once per module (~20 s of CPU)
def test_predict_shapes_nan_rows_and_tta(trained: Path, grade_data: Path) -> None:
    grader = Grader.load(trained, "cpu")
    coords = load_tables(grade_data).coordinates
    study = load_study(grade_data / "train_images" / str(NO_AXIAL))
    points = coords[coords.study_id == NO_AXIAL]
    probs = grader.predict(study, points)
    assert probs.shape == (25, 3)
    axial = np.array([c.endswith("subarticular_stenosis") for c, _ in TARGETS])
    assert np.isnan(probs[axial]).all()  # no axial series: cannot be graded
    graded = probs[~axial & ~np.isnan(probs).any(axis=1)]
    assert len(graded) >= 10 and np.allclose(graded.sum(axis=1), 1.0)
    missing = points.iloc[1:]  # drop one point: that target becomes NaN too
    assert (
        np.isnan(grader.predict(study, missing)).all(axis=1).sum()
        == np.isnan(probs).all(axis=1).sum() + 1
    )
    tta = grader.predict(study, points, tta=True)
    graded_rows = ~np.isnan(probs).any(axis=1)
    assert np.array_equal(np.isnan(tta), np.isnan(probs)) and np.allclose(
        tta[graded_rows].sum(axis=1), 1.0
    )
    batch = grader.predict_many([(study, points), (study, points)], batch_size=1)
    assert np.allclose(batch[0], probs, equal_nan=True) and np.allclose(
        batch[1], probs, equal_nan=True
    )


def test_dataset_items_patches_and_unreadable_study(grade_data: Path, tmp_path: Path) -> None:
    (grade_data / "train_images" / "9999").mkdir(exist_ok=True)  # an empty study folder
    failed: dict[int, str] = {}
    studies = dict(iter_studies(grade_data, [9000, 9999], failed=failed, progress=False))
    assert list(studies) == [9000] and "9999" in failed[9999]
    tables = load_tables(grade_data)
    cfg = grader_config().grade
    crop, augment = crop_params(cfg), augment_params(cfg)
    data = GradeDataset.from_studies(
        studies.items(), tables.coordinates, tables.labels, crop, augment
    )
    item = data[0]
    assert item["crops"].shape == (25, cfg.slices, cfg.crop_px, cfg.crop_px)
    assert item["valid"].dtype == torch.bool and item["labels"].dtype == torch.int64
    assert bool(((item["labels"] >= 0) <= item["valid"]).all())  # no label without a crop
    # a patch gives the same crops as the full volume, for any jitter within the augmentation
    rng = np.random.default_rng(0)
    full = locate_targets(studies[9000], tables.coordinates[tables.coordinates.study_id == 9000])
    for loc in (f for f in full if f is not None):
        small = patch(loc, crop, augment)
        assert small.volume.pixels.size < loc.volume.pixels.size
        for _ in range(3):
            jitter = random_jitter(rng, augment)
            args = dict(
                view=loc.view,
                slices=crop.slices,
                crop_mm=crop.crop_mm,
                crop_px=crop.crop_px,
                jitter=jitter,
            )
            assert np.allclose(
                crop_2p5d(small.volume, small.slice_index, small.x, small.y, **args),
                crop_2p5d(loc.volume, loc.slice_index, loc.x, loc.y, **args),
                atol=1e-3,
            )
    cached = dict(
        iter_studies(grade_data, [9000], tmp_path / "cache", failed=failed, progress=False)
    )
    assert np.array_equal(
        cached[9000].series[0].stacks[0].pixels, studies[9000].series[0].stacks[0].pixels
    )


@pytest.mark.slow  # trains the tiny grader once per module (~20 s of CPU)
def test_cli_evaluate_scores_held_out_studies_next_to_the_prior(
    trained: Path, grade_data: Path
) -> None:
    from typer.testing import CliRunner

    from spinegrade.cli import app
    from spinegrade.localize.train import fold_split

    result = CliRunner().invoke(
        app, ["grade", "evaluate", str(grade_data), str(trained), "--config", "tiny", "--fold", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "model" in result.output and "prior" in result.output
    report = __import__("json").loads((trained.parent / "grade_eval.json").read_text())
    _, held = fold_split(grade_data, grader_config(), 1)
    coords = load_tables(grade_data).coordinates
    pointed = coords[coords.study_id.isin(held)].groupby("study_id").size()
    assert report["studies"] == len(held)
    assert report["filled_with_prior"] == 25 * len(held) - int(
        pointed.sum()
    )  # targets without a point
    assert 0 < report["model"]["score"] < 10 and 0 < report["prior"]["score"] < 10


def test_the_canal_graded_from_both_views_trains_and_predicts(
    grade_data: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    tables = load_tables(grade_data)
    cfg = load_config(
        "tiny", ["data.num_workers=0", *MEMORISE, "grade.optim.epochs=2", "grade.views.spinal=both"]
    )
    model = train_grader(
        grade_data, TRAIN, tables.coordinates, tables.labels, tmp_path, cfg, progress=False
    )
    grader = Grader.load(model)
    assert grader.crop.views.spinal == "both" and len(grader.slots) == 30
    coords = tables.coordinates
    spinal = np.array([c == "spinal_canal_stenosis" for c, _ in TARGETS])
    axial = np.array([c.endswith("subarticular_stenosis") for c, _ in TARGETS])
    for sid in (9000, NO_AXIAL):
        study = load_study(grade_data / "train_images" / str(sid))
        points = coords[coords.study_id == sid]
        probs = grader.predict(study, points, tta=True)
        assert probs.shape == (25, 3)
        pointed = {(c, lv) for c, lv in TARGETS if _has_point(points, c, lv)}
        graded = ~np.isnan(probs).any(axis=1)
        # the canal is graded without its axial crop too (study 9003 has no axial series)
        assert all(graded[i] for i, t in enumerate(TARGETS) if spinal[i] and t in pointed)
        assert np.allclose(probs[graded].sum(axis=1), 1.0)
    assert not graded[axial].any()  # study 9003: no axial series, no subarticular crop
    # the samples hold each canal point's axial crop where the study has an axial series
    data = GradeDataset.from_studies(
        [(9000, load_study(grade_data / "train_images" / "9000"))],
        coords,
        tables.labels,
        crop_params(cfg.grade),
    )
    item = data[0]
    assert item["crops"].shape == (30, cfg.grade.slices, cfg.grade.crop_px, cfg.grade.crop_px)
    axial_canal = [j for j, v in enumerate(data.slots.view) if v == "axial"][:5]
    assert data.slots.target[axial_canal[0]] == 0 and bool(item["valid"][axial_canal].all())


def _has_point(points: pd.DataFrame, condition: str, level: str) -> bool:
    return bool(((points.condition == condition) & (points.level == level)).any())
