"""k-fold cross-validation of the two stages on a folder of PNG slices or crops, resumable by fold.

Folds are by study, stratified on severity (`data.folds.make_folds` on the wide labels table: the
folder's targets filled, the others blank). Per fold `k`:

1. `prior.csv`: the class prior of the training studies' labels (the constant baseline);
2. slices: the 5-channel heatmap localiser on the training slices (validation loss on the held-out
   ones, for the learning curves only: nothing is selected on it);
3. the grader on the training studies' TRUE points (crops) with jitter;
4. out of fold: the held-out studies predicted from their key columns alone by an ensemble of
   that one fold, uncalibrated (`slices.predict`, the path `slices predict` ships), and, for
   slices, graded once more from the TRUE points (what stage 2 can do with perfect points);
5. `fold.json`, last: the fold is complete (with the seconds per epoch of each stage).

Then the run's OOF files are rebuilt from the complete folds and `evaluate` recomputes the
calibration, metrics and figures. An interrupted run resumes at the first incomplete fold (and
inside a stage from the loop's `last.pt`); re-running a finished run trains nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from spinegrade.config import Config
from spinegrade.cv.train import merge_oof, prior_table, wanted_folds
from spinegrade.data.folds import make_folds
from spinegrade.errors import DataError
from spinegrade.io import write_json, write_with
from spinegrade.slices.folder import (
    FOLD_JSON,
    FOUND_POINTS,
    HISTORY_JSON,
    MODE_KEY,
    OOF_POINTS,
    OOF_PREDICTIONS,
    OOF_TRUE_POINTS,
    PRIOR_CSV,
    SlicesRun,
)
from spinegrade.slices.grade import check_config, load_volumes, slice_files, train_grader
from spinegrade.slices.inputs import SLICES, Folder, SliceFolder, mode_of, open_folder
from spinegrade.slices.localize import Prepared, SliceLocalizer, samples, train_localizer
from spinegrade.slices.predict import asked, grade_points, load_folds, predict_folder
from spinegrade.training.backbones import check_pretrained
from spinegrade.training.device import resolve_device

#: Seed offset between a fold's graders (`slices.graders`; the first keeps a one-grader run's seed).
GRADER_SEED_STEP = 7919


@dataclass
class TrainSummary:
    """What one `train` call did."""

    run_dir: Path
    mode: str
    folds_trained: list[int] = field(default_factory=list)
    folds_reused: list[int] = field(default_factory=list)
    epoch_seconds: dict[str, float] = field(default_factory=dict)  #: mean per stage, this call
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    cfg: Config,
    *,
    mode: str | None = None,
    folds: list[int] | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Cross-validate on the slices or crops folder `data_dir` (mode from its table unless given)
    into `run_dir`; `folds` trains only those (default all `cfg.data.folds`). Resumable."""
    start = time.perf_counter()
    folder = open_folder(data_dir, mode, truth=True)
    mode = mode_of(folder)
    check_config(cfg, mode)
    if mode == SLICES:
        check_pretrained(cfg.localize.pretrained, cfg.localize.backbone, "localize.pretrained")
    check_pretrained(cfg.grade.pretrained, cfg.grade.backbone, "grade.pretrained")
    studies = folder.studies()
    if cfg.data.max_studies is not None:
        studies = studies[: cfg.data.max_studies]
        folder = folder.subset(studies)
    run = SlicesRun(run_dir)
    if (run / "run.json").is_file() and run.info().get(MODE_KEY, mode) != mode:
        raise DataError(f"{run.path}: a run of {run.mode()}, not {mode}; use a new --out")
    run.check_config(cfg)
    labels = folder.labels()
    fold_table = make_folds(labels, cfg.data.folds, cfg.data.seed)
    wanted = wanted_folds(folds, cfg.data.folds)
    run.start(cfg, fold_table, Path(data_dir), wanted, 1, extra={MODE_KEY: mode})
    summary = TrainSummary(run.path, mode)
    done = set(run.completed_folds())
    todo = [k for k in wanted if k not in done]
    summary.folds_reused = [k for k in wanted if k in done]
    if todo:
        volumes = load_volumes(folder, cfg, progress)
        prepared = Prepared.of(volumes, cfg.localize.image_size) if mode == SLICES else None
        per_fold: dict[str, list[float]] = {}
        for k in tqdm(todo, desc="folds", unit="fold", disable=not progress):
            timing = _train_fold(
                k, run, cfg, folder, labels, fold_table, volumes, prepared, progress
            )
            summary.folds_trained.append(k)
            for stage, seconds in timing["epoch_seconds"].items():
                per_fold.setdefault(stage, []).append(seconds)
        summary.epoch_seconds = {stage: sum(v) / len(v) for stage, v in per_fold.items()}
    from spinegrade.slices.evaluate import evaluate

    summary.metrics = evaluate(run.path, folder=folder)
    summary.seconds = time.perf_counter() - start
    return summary


def _train_fold(
    k: int,
    run: SlicesRun,
    cfg: Config,
    folder: Folder,
    labels: pd.DataFrame,
    fold_table: pd.DataFrame,
    volumes: dict,
    prepared: Prepared | None,
    progress: bool,
) -> dict[str, Any]:
    """Train fold `k`'s stages, predict its held-out studies, write its files (`fold.json` last)."""
    train_ids = fold_table.loc[fold_table["fold"] != k, "study_id"].astype(int).tolist()
    held = fold_table.loc[fold_table["fold"] == k, "study_id"].astype(int).tolist()
    fdir = run.fold_dir(k)
    prior = prior_table(labels[labels["study_id"].isin(train_ids)])
    write_with(fdir / PRIOR_CSV, lambda t: prior.to_csv(t, index=False))
    timings: dict[str, float] = {}
    epoch_seconds: dict[str, float] = {}
    train_set, held_set = folder.subset(train_ids), folder.subset(held)
    if isinstance(folder, SliceFolder):
        assert prepared is not None
        tick = time.perf_counter()
        torch.manual_seed(cfg.data.seed + 1000 * k)
        files = slice_files(folder)
        path = train_localizer(
            prepared,
            samples(train_set.points, files, prepared),
            samples(held_set.points, files, prepared),
            run.localizer_dir(k),
            cfg,
            progress=progress,
        )
        timings["localize_train_s"] = time.perf_counter() - tick
        epoch_seconds["localize"] = _epoch_seconds(path.parent / HISTORY_JSON)

    tick = time.perf_counter()
    n, n_found = cfg.slices.graders, cfg.slices.found_point_graders
    found = None
    if n_found:
        assert isinstance(train_set, SliceFolder) and prepared is not None
        found = found_points(run, k, cfg, train_set, prepared)
        write_with(fdir / FOUND_POINTS, lambda t: found.to_csv(t, index=False))
    for i, model in enumerate(run.grader_models(k, n)):
        torch.manual_seed(cfg.data.seed + 1000 * k + 1 + GRADER_SEED_STEP * i)
        seed = cfg.data.seed + GRADER_SEED_STEP * i
        path = train_grader(
            folder,
            volumes,
            labels,
            train_ids,
            held,
            model.parent,
            cfg,
            progress=progress,
            seed=seed,
            points=found if i >= n - n_found else None,
        )
        if i == 0:
            epoch_seconds["grade"] = _epoch_seconds(path.parent / HISTORY_JSON)
    timings["grade_train_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    names = predict_held_out(run, k, cfg, folder, held, volumes, prepared)
    timings["predict_s"] = time.perf_counter() - tick
    record = {
        "fold": k,
        "train_studies": len(train_ids),
        "held_out_studies": len(held),
        "timings": timings,
        "epoch_seconds": epoch_seconds,
    }
    write_json(fdir / FOLD_JSON, record)
    merge_oof(run, names)
    return record


def found_points(
    run: SlicesRun, k: int, cfg: Config, train_set: SliceFolder, prepared: Prepared
) -> pd.DataFrame:
    """The points fold `k`'s localiser finds on its own training slices, decoded as
    `cfg.slices` says (what `slices.found_point_graders` are trained around)."""
    localizer = SliceLocalizer.load(run.localizer_model(k), resolve_device(cfg.device))
    return localizer.locate(asked(train_set), prepared, cfg.slices)


def predict_held_out(
    run: SlicesRun,
    k: int,
    cfg: Config,
    folder: Folder,
    held: list[int],
    volumes: dict,
    prepared: Prepared | None = None,
) -> tuple[str, ...]:
    """Fold `k`'s out-of-fold files: its `held` studies predicted from their key columns alone by
    that fold's uncalibrated models with `cfg.slices` (and, for slices, graded from the TRUE
    points too). Returns the names written into `fold_<k>/`."""
    fdir = run.fold_dir(k)
    models = load_folds(run, [k], cfg.device, calibrated=False)
    keys_only = open_folder(folder.root, mode_of(folder), truth=False).subset(held)
    sizes = {cfg.localize.image_size: prepared} if prepared is not None else None
    result = predict_folder(models, keys_only, volumes, cfg.slices, prepared=sizes)
    write_with(fdir / OOF_PREDICTIONS, lambda t: result.submission.to_csv(t, index=False))
    if result.points is None:
        return (OOF_PREDICTIONS,)
    held_set = folder.subset(held)
    assert isinstance(held_set, SliceFolder) and isinstance(keys_only, SliceFolder)
    pts = result.points.assign(fold=k)
    write_with(fdir / OOF_POINTS, lambda t: pts.to_csv(t, index=False))
    true = grade_points(models, keys_only, volumes, held_set.points, cfg.slices.grade_around_mm)
    write_with(fdir / OOF_TRUE_POINTS, lambda t: true.to_csv(t, index=False))
    return (OOF_POINTS, OOF_PREDICTIONS, OOF_TRUE_POINTS)


def _epoch_seconds(history: Path) -> float:
    """Mean wall seconds per epoch in a loop's `history.json` (0 when it has no epoch)."""
    import json

    epochs = json.loads(history.read_text(encoding="utf-8")) if history.is_file() else []
    return float(sum(e["seconds"] for e in epochs) / len(epochs)) if epochs else 0.0
