"""k-fold cross-validation of both stages into one run folder (`spinegrade.cv.folder` names it).

Per fold `train` writes the fold's prior (its training labels), trains the localiser on the
training studies, trains the grader on the training studies' TRUE coordinates, then predicts the
held-out studies with an `Ensemble` of that one fold: the same code path as `spinegrade predict`,
so what cross-validation measures is what `predict` ships (`predict --folds k` on fold k's
held-out studies gives their out-of-fold rows). Targets that cannot be graded, and studies that
cannot be read, get the fold's prior and are flagged in `oof_points.csv` (`graded` = False,
`reason`).

Resuming. A fold is complete when `fold_<k>/fold.json` exists: it is written last. The run's OOF
files are rebuilt from the complete folds after each fold, so an interrupted run resumes at the
first incomplete fold (and inside a stage from the loop's `last.pt`), and re-running a finished run
trains nothing.

Distributed (`torchrun --nproc-per-node N -m spinegrade train ...`): every process joins the group,
trains each stage together through `fit` (DDP), then predicts its share of the held-out studies
(`held[rank::world]`) from the checkpoints rank 0 wrote; rank 0 gathers the shares and writes.
Rank 0 alone writes files; barriers separate the steps. `fold.json` records which rank predicted
which study. Across several machines (`--nnodes`) the run folder and the cache must be on a file
system every node sees.

The grader's training also reports a validation loss on the held-out studies' TRUE coordinates for
the learning curves; it selects nothing, so the OOF predictions stay honest. With
`<stage>.optim.early_stopping` each network chooses its epoch on an inner fold of the fold's
TRAINING studies (`spinegrade.training.selection`: the stage splits the training studies it is
given); `fold.json` records each network's inner studies and chosen epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch
from tqdm.auto import tqdm

from spinegrade.config import Config
from spinegrade.constants import (
    CONDITION_LABELS,
    LEVEL_LABELS,
    SEVERITIES,
    SUBMISSION_COLUMNS,
    TARGETS,
)
from spinegrade.cv.ensemble import Ensemble, StudyPrediction, prior_prediction
from spinegrade.cv.folder import (
    FOLD_JSON,
    LOCALIZATION_ERRORS,
    OOF_POINTS,
    OOF_PREDICTIONS,
    PRIOR_CSV,
    RunFolder,
)
from spinegrade.data.cache import CacheResult, cache_studies, load_cached
from spinegrade.data.folds import make_folds
from spinegrade.data.tables import RsnaTables, image_coverage, load_tables, validate_tables
from spinegrade.errors import ConfigError, DataError, SpinegradeError
from spinegrade.grade import train_grader
from spinegrade.grade.train import check_consistency
from spinegrade.io import write_json, write_with
from spinegrade.localize.baseline import MeanPositionBaseline
from spinegrade.localize.dataset import world_points
from spinegrade.localize.evaluate import point_errors
from spinegrade.localize.train import train_localizer
from spinegrade.metrics import smoothed_prior
from spinegrade.training import distributed
from spinegrade.training.backbones import check_pretrained
from spinegrade.training.selection import SELECTION_JSON

T = TypeVar("T")

#: Columns of `oof_points.csv` (one row per target of each held-out study).
OOF_POINT_COLUMNS = (
    "study_id",
    "condition",
    "level",
    "series_id",
    "instance_number",
    "x",
    "y",
    "stack_index",
    "slice_index",
    "world_x",
    "world_y",
    "world_z",
    "confidence",
    "method",
    "reason",
    "graded",
    "fold",
)


@dataclass
class RunSummary:
    """What one `train` call did: folds trained, folds found done, unreadable studies, metrics."""

    run_dir: Path
    folds_trained: list[int] = field(default_factory=list)
    folds_reused: list[int] = field(default_factory=list)
    failed_studies: dict[int, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    rank: int = 0  #: this process's rank under torchrun (only rank 0 should print)
    left_out: list[int] = field(default_factory=list)  #: labelled studies without images


@dataclass
class FoldPart:
    """One process's share of a fold's held-out predictions."""

    rank: int
    study_ids: list[int]
    points: pd.DataFrame  #: OOF_POINT_COLUMNS rows (25 per study)
    predictions: pd.DataFrame  #: submission rows (25 per study)
    loc_errors: pd.DataFrame  #: `point_errors` rows of the model and the baseline (`who`)


def prior_table(labels: pd.DataFrame) -> pd.DataFrame:
    """`smoothed_prior(labels)` as the table of a `prior.csv`: condition, level, the 3
    severities."""
    table = pd.DataFrame(TARGETS, columns=["condition", "level"])
    for i, s in enumerate(SEVERITIES):
        table[s] = smoothed_prior(labels)[:, i]
    return table


def train(
    data_root: str | Path,
    run_dir: str | Path,
    cfg: Config,
    *,
    folds: list[int] | None = None,
    progress: bool = True,
) -> RunSummary:
    """Cross-validate both stages on the RSNA folder `data_root` into `run_dir` (resumable).

    Only the labelled studies whose images are in `train_images/` take part (a partial download
    trains on what it has; `RunSummary.left_out` names the others). `folds` trains only those
    folds (default: all `cfg.data.folds`); the OOF files and metrics then cover the complete folds'
    studies only (`metrics.json` says which). Works alone or under torchrun. Raises
    SpinegradeError for unusable tables, folds that do not exist, or a run folder made with another
    config or split.
    """
    start = time.perf_counter()
    owns_group = not distributed.current().enabled  # else the caller set it up and tears it down
    info = distributed.init_distributed()
    data_root, run = Path(data_root), RunFolder(run_dir)
    show = progress and info.is_main
    try:
        wanted = wanted_folds(folds, cfg.data.folds)
        check_pretrained(cfg.localize.pretrained, cfg.localize.backbone, "localize.pretrained")
        check_pretrained(cfg.grade.pretrained, cfg.grade.backbone, "grade.pretrained")
        check_consistency(cfg.grade)
        _on_main(lambda: run.check_config(cfg))  # before reading any data
        tables, labels, left_out = load_labels(data_root, cfg, show)
        fold_table = make_folds(labels, cfg.data.folds, cfg.data.seed)
        _on_main(
            lambda: run.start(
                cfg, fold_table, data_root, wanted, info.world_size, left_out=left_out
            )
        )
        cached = _on_main(
            lambda: _build_cache(data_root, tables, fold_table, run.cache_dir(cfg), cfg, show)
        )
        summary = RunSummary(
            run.path, failed_studies=dict(cached.failed), rank=info.rank, left_out=left_out
        )
        done = set(run.completed_folds())
        for k in tqdm(wanted, desc="folds", unit="fold", disable=not show, dynamic_ncols=True):
            if k in done:
                summary.folds_reused.append(k)
                continue
            _train_fold(k, data_root, run, cfg, tables, labels, fold_table, cached, show)
            summary.folds_trained.append(k)
        from spinegrade.cv.evaluate import evaluate

        summary.metrics = _on_main(lambda: evaluate(run.path, labels, data_root=data_root))
        summary.seconds = time.perf_counter() - start
        return summary
    finally:
        if owns_group:
            distributed.shutdown()


def _on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and hand its result, or its SpinegradeError, to every process.

    Under torchrun a failure on rank 0 is thus raised on all ranks instead of leaving them waiting.
    """
    outcome: Any = None
    if distributed.current().is_main:
        try:
            outcome = fn()
        except SpinegradeError as exc:
            outcome = exc
    outcome = distributed.broadcast_object(outcome)
    if isinstance(outcome, SpinegradeError):
        raise outcome
    return outcome


def load_labels(
    data_root: Path, cfg: Config, show: bool = True
) -> tuple[RsnaTables, pd.DataFrame, list[int]]:
    """Tables, the labels of the studies to cross-validate (those with an image folder, first
    `max_studies` by id), and the labelled studies left out for having no images."""
    tables = load_tables(data_root)
    report = validate_tables(tables)
    for p in report.warnings:
        _say(
            f"warning: {p.kind}: {p.count}" + (f" (e.g. {p.examples[0]})" if p.examples else ""),
            show,
        )
    if not report.ok:
        worst = report.errors[0]
        raise DataError(
            f"{data_root}: {len(report.errors)} table error(s), e.g. {worst.kind}: "
            f"{worst.examples[0] if worst.examples else worst.count}; run `spinegrade validate`"
        )
    assert tables.labels is not None
    labels = tables.labels.sort_values("study_id").reset_index(drop=True)
    coverage = image_coverage(tables)
    if not coverage.with_images:
        raise DataError(
            f"{coverage.images_dir}: no folder of a labelled study (the images of "
            f"train.csv's studies)"
        )
    has = labels["study_id"].isin(coverage.with_images)
    left_out = list(coverage.without_images)
    if left_out:
        shown = ", ".join(map(str, left_out[:5])) + (" ..." if len(left_out) > 5 else "")
        _say(
            f"{coverage.summary()}; training on those {len(coverage.with_images)}, leaving out "
            f"{len(left_out)} ({shown}; all listed in run.json)",
            show,
        )
    labels = labels[has].reset_index(drop=True)
    if cfg.data.max_studies is not None:
        labels = labels.head(cfg.data.max_studies).reset_index(drop=True)
    return tables, labels, left_out


def wanted_folds(folds: list[int] | None, k: int) -> list[int]:
    """`folds` checked against `k` folds, sorted and unique (default: all `k`)."""
    if folds is None:
        return list(range(k))
    bad = [f for f in folds if not 0 <= f < k]
    if bad or not folds:
        raise ConfigError(f"folds {folds}: each must be in 0..{k - 1} (data.folds is {k})")
    return sorted(set(folds))


def _build_cache(
    data_root: Path,
    tables: RsnaTables,
    fold_table: pd.DataFrame,
    cache_dir: Path,
    cfg: Config,
    show: bool,
) -> CacheResult:
    """Cache every study once (parallel, atomic, reused by later runs); list the unreadable ones."""
    ids = fold_table["study_id"].astype(int).tolist()
    result = cache_studies(
        data_root / "train_images",
        ids,
        cache_dir,
        tables.series,
        workers=cfg.data.num_workers,
        progress=show,
    )
    for sid, why in sorted(result.failed.items()):
        _say(f"skipped study {sid}: {why}", show)
    if len(result.failed) == len(ids):
        raise DataError(
            f"{data_root}: none of the {len(ids)} studies could be read "
            f"(e.g. {next(iter(result.failed.values()))})"
        )
    return result


def _train_fold(
    k: int,
    data_root: Path,
    run: RunFolder,
    cfg: Config,
    tables: RsnaTables,
    labels: pd.DataFrame,
    fold_table: pd.DataFrame,
    cached: CacheResult,
    show: bool,
) -> None:
    """Train both stages of fold `k`, predict its held-out studies, write the fold's files."""
    info = distributed.current()
    train_ids = _ids(fold_table, fold_table["fold"] != k)
    held = _ids(fold_table, fold_table["fold"] == k)
    readable = [s for s in train_ids if s in cached.paths]
    cache_dir = run.cache_dir(cfg)
    timings: dict[str, float] = {}
    assert tables.coordinates is not None
    _on_main(
        lambda: write_with(
            run.fold_dir(k) / PRIOR_CSV,
            lambda tmp: prior_table(labels[labels["study_id"].isin(train_ids)]).to_csv(
                tmp, index=False
            ),
        )
    )

    _say(f"fold {k}: training on {len(readable)} studies, {len(held)} held out", show)
    tick = time.perf_counter()
    torch.manual_seed(cfg.data.seed + 1000 * k)
    train_localizer(
        data_root, readable, run.localizer_dir(k), cfg, cache_dir=cache_dir, progress=show
    )
    distributed.barrier()
    timings["localize_train_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    torch.manual_seed(cfg.data.seed + 1000 * k + 1)
    train_grader(
        data_root,
        readable,
        tables.coordinates,
        labels,
        run.grader_model(k).parent,
        cfg,
        val_ids=[s for s in held if s in cached.paths],
        cache_dir=cache_dir,
        progress=show,
    )
    distributed.barrier()
    timings["grade_train_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    baseline = _on_main(lambda: _fit_baseline(readable, cached, tables.coordinates))
    part = predict_fold(
        run,
        k,
        held[info.rank :: info.world_size],
        cached,
        tables.coordinates,
        baseline,
        device=cfg.device,
        rank=info.rank,
        progress=show,
    )
    parts = distributed.all_gather_object(part)
    timings["predict_s"] = time.perf_counter() - tick
    _on_main(lambda: _write_fold(run, k, parts, timings, len(readable)))


def _ids(fold_table: pd.DataFrame, mask: pd.Series) -> list[int]:
    return fold_table.loc[mask, "study_id"].astype(int).tolist()


def _fit_baseline(
    train_ids: list[int], cached: CacheResult, coords: pd.DataFrame
) -> MeanPositionBaseline:
    """The localisation baseline (mean position per target) fitted on the training studies."""
    by_study = dict(tuple(coords.groupby("study_id")))

    def labelled():  # type: ignore[no-untyped-def]
        for sid in (s for s in train_ids if s in by_study and s in cached.paths):
            study = load_cached(cached.paths[sid])
            yield study, world_points(study, by_study[sid])

    return MeanPositionBaseline.fit(labelled())  # type: ignore[arg-type]


def predict_fold(
    run: RunFolder,
    fold: int,
    study_ids: list[int],
    cached: CacheResult,
    coords: pd.DataFrame,
    baseline: MeanPositionBaseline | None,
    *,
    device: str = "auto",
    rank: int = 0,
    progress: bool = True,
) -> FoldPart:
    """Out-of-fold rows of `study_ids`: an uncalibrated `Ensemble` of fold `fold` alone, exactly
    what `predict --folds <fold>` runs; also the localisation errors of the model and of
    `baseline` (when given) against the true points of `coords`."""
    ensemble = Ensemble.of_folds(run, [fold], device=device)
    for f in ensemble.folds:
        f.temperatures = {}  # out-of-fold rows are raw: evaluate cross-fits their calibration
    by_study = dict(tuple(coords.groupby("study_id")))
    points, preds, errors = [], [], []
    for sid in tqdm(study_ids, desc=f"fold {fold} predict", disable=not progress, leave=False):
        try:
            if sid not in cached.paths:
                raise DataError(cached.failed.get(sid, f"study {sid}: not cached"))
            study = load_cached(cached.paths[sid])
            pred = ensemble.predict(study)
        except SpinegradeError as exc:
            pred = prior_prediction(sid, ensemble.prior, str(exc))
            study = None
        located = point_table(pred)
        points.append(located.assign(fold=fold))
        preds.append(submission_of(pred))
        if study is not None:
            truth = world_points(study, by_study.get(sid, coords.iloc[:0])).assign(study_id=sid)
            errors.append(point_errors(located, truth).assign(who="model"))
            if baseline is not None:
                errors.append(point_errors(baseline.locate(study), truth).assign(who="baseline"))
    return FoldPart(rank, list(study_ids), _concat(points), _concat(preds), _concat(errors))


def point_table(pred: StudyPrediction) -> pd.DataFrame:
    """The located points of a prediction: `OOF_POINT_COLUMNS` without `fold`."""
    t = pred.targets.assign(study_id=pred.study_id, graded=pred.targets["folds_graded"] > 0)
    t.loc[~t["graded"] & (t["reason"] == ""), "reason"] = "point not on a readable slice"
    return t[[c for c in OOF_POINT_COLUMNS if c != "fold"]]


def submission_of(pred: StudyPrediction) -> pd.DataFrame:
    """The 25 submission rows of a prediction."""
    return pd.DataFrame(
        {
            "row_id": pred.targets["row_id"],
            **{s: pred.probs[:, i] for i, s in enumerate(SEVERITIES)},
        }
    )


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _write_fold(
    run: RunFolder, k: int, parts: list[FoldPart], timings: dict[str, float], n_train: int
) -> None:
    """The fold's files (atomically, `fold.json` last), then the run's OOF files from all folds."""
    fdir = run.fold_dir(k)
    order = {sid: i for i, sid in enumerate(sorted(s for p in parts for s in p.study_ids))}
    points = _by_study(_concat([p.points for p in parts]), order)
    preds = _concat([p.predictions for p in parts])
    preds = preds.assign(study_id=preds["row_id"].str.split("_").str[0].astype(int))
    preds = _by_study(preds, order)[list(SUBMISSION_COLUMNS)]
    errors = _concat([p.loc_errors for p in parts])
    csv_points = points.assign(
        condition=points["condition"].map(CONDITION_LABELS), level=points["level"].map(LEVEL_LABELS)
    )
    write_with(fdir / OOF_POINTS, lambda tmp: csv_points.to_csv(tmp, index=False))
    write_with(fdir / OOF_PREDICTIONS, lambda tmp: preds.to_csv(tmp, index=False))
    write_with(fdir / LOCALIZATION_ERRORS, lambda tmp: errors.to_csv(tmp, index=False))
    write_json(
        fdir / FOLD_JSON,
        {
            "fold": k,
            "train_studies": n_train,
            "held_out_studies": len(order),
            "targets_not_graded": int((~points["graded"].astype(bool)).sum()),
            "timings": timings,
            "predicted_by_rank": {str(p.rank): [int(s) for s in p.study_ids] for p in parts},
            "selection": {
                name: json.loads((folder / SELECTION_JSON).read_text(encoding="utf-8"))
                for name, folder in run.networks(k).items()
                if (folder / SELECTION_JSON).is_file()
            },
        },
    )
    merge_oof(run)


def _by_study(frame: pd.DataFrame, order: dict[int, int]) -> pd.DataFrame:
    """Rows sorted by the study order (stable within a study)."""
    return (
        frame.assign(_s=frame["study_id"].map(order))
        .sort_values("_s", kind="stable")
        .drop(columns="_s")
    )


def merge_oof(run: RunFolder, names: tuple[str, ...] = (OOF_POINTS, OOF_PREDICTIONS)) -> list[int]:
    """Rebuild the run's `names` (default `oof_points.csv` and `oof_predictions.csv`) from the
    complete folds' files of the same names."""
    done = run.completed_folds()
    for name in names:  # read as text: every value is copied as written
        table = pd.concat(
            [pd.read_csv(run.fold_dir(k) / name, dtype=str, keep_default_na=False) for k in done],
            ignore_index=True,
        )
        write_with(run / name, lambda tmp, t=table: t.to_csv(tmp, index=False))
    return done


def _say(message: str, show: bool) -> None:
    if show:
        tqdm.write(message)
