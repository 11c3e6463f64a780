"""The training orchestrator: k-fold cross-validation of both stages into one run folder.

`train(data_root, run_dir, cfg)` follows the run folder contract (`config.yaml`, `folds.csv`,
`prior.csv`, `fold_<k>/{localizer,grader}/`, `oof_points.csv`, `oof_predictions.csv`,
`localization.json`, `metrics.json`, `figures/`). Per fold it trains the localiser on the training
studies, trains the grader on the training studies' TRUE coordinates, then locates the held-out
studies and grades them from the PREDICTED points; targets that cannot be graded (and studies that
cannot be read) get the class prior of the fold's training labels and are flagged in
`oof_points.csv` (`graded` = False, `reason`).

Resuming. A fold is complete when `fold_<k>/fold.json` exists: it is written last, after the fold's
own `oof_points.csv`, `oof_predictions.csv` and `localization_errors.csv`, all atomically. The run's
OOF files are rebuilt from the complete folds after each fold, so an interrupted run resumes at the
first incomplete fold (and inside a stage from the loop's `last.pt`), and re-running a finished run
trains nothing.

Distributed (`torchrun --nproc-per-node N -m spinegrade train ...`): every process joins the group,
trains each stage together through `fit` (DDP), then predicts its share of the held-out studies
(`held[rank::world]`) from the checkpoints rank 0 wrote; rank 0 gathers the shares and writes.
Rank 0 alone writes files; barriers separate the steps. `fold.json` records which rank predicted
which study. Across several machines (`--nnodes`) the run folder and the cache must be on a file
system every node sees: the other ranks read the cache and the fold checkpoints rank 0 wrote.

The grader's training also reports a validation loss on the held-out studies' TRUE coordinates for
the learning curves; it selects nothing (no early stopping), so the OOF predictions stay honest.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from spinegrade.config import Config, from_dict, save_config, to_dict
from spinegrade.constants import (
    CONDITION_LABELS,
    LEVEL_LABELS,
    SEVERITIES,
    SEVERITY_WEIGHTS,
    SUBMISSION_COLUMNS,
    TARGETS,
    row_id,
)
from spinegrade.data.cache import CacheResult, cache_studies, load_cached
from spinegrade.data.folds import make_folds
from spinegrade.data.tables import RsnaTables, labels_long, load_tables, validate_tables
from spinegrade.errors import ConfigError, DataError, SpinegradeError
from spinegrade.io import write_json, write_with
from spinegrade.metrics import constant_prior_submission
from spinegrade.training import distributed

CONFIG_YAML, FOLDS_CSV, PRIOR_CSV, RUN_JSON = "config.yaml", "folds.csv", "prior.csv", "run.json"
OOF_POINTS, OOF_PREDICTIONS = "oof_points.csv", "oof_predictions.csv"
FOLD_JSON, LOCALIZATION_ERRORS = "fold.json", "localization_errors.csv"
LOCALIZER_DIR, GRADER_DIR, GRADER_MODEL = "localizer", "grader", "model.pt"
#: Config keys that may change between a run and its resumption (they do not change the results).
RESUMABLE_KEYS = ("name", "device", "data.num_workers", "data.cache_dir")
#: Held-out studies graded per batch (bounds the memory of prediction).
PREDICT_CHUNK = 16
#: Label weight added to each class of the prior (see `prior_table`).
PRIOR_PSEUDO_COUNT = 1.0

T = TypeVar("T")


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


@dataclass
class FoldPart:
    """One process's share of a fold's held-out predictions."""

    rank: int
    study_ids: list[int]
    points: pd.DataFrame  #: oof_points rows (25 per study)
    predictions: pd.DataFrame  #: submission rows (25 per study)
    loc_errors: pd.DataFrame  #: `point_errors` rows of the model and the baseline (`who`)


# --- run folder -----------------------------------------------------------------------------------


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """`<run_dir>/fold_<fold>`."""
    return Path(run_dir) / f"fold_{fold}"


def completed_folds(run_dir: str | Path) -> list[int]:
    """Folds whose `fold.json` (written last) exists, in order."""
    done = [int(p.parent.name.split("_")[1]) for p in Path(run_dir).glob(f"fold_*/{FOLD_JSON}")]
    return sorted(done)


def cache_dir_of(run_dir: str | Path, cfg: Config) -> Path:
    """The study cache folder: `cfg.data.cache_dir`, else `<run_dir>/cache`."""
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(run_dir) / "cache"


def prior_table(labels: pd.DataFrame, pseudo_count: float = PRIOR_PSEUDO_COUNT) -> pd.DataFrame:
    """Class prior per target of wide `labels`: 25 rows `condition, level, <the 3 severities>`.

    The metric-weighted class frequencies (`constant_prior_submission`: the constant that minimises
    the weighted log loss), smoothed as `(W p + a) / (W + 3 a)` with `W` the target's total label
    weight and `a = pseudo_count`, so that a class absent from a small training set does not get
    probability 0 (its log loss would be ~35). With thousands of studies the smoothing vanishes.
    """
    p = constant_prior_submission(labels, study_ids=[0])[list(SEVERITIES)].to_numpy()  # (25, 3)
    long = labels_long(labels)
    long = long[long["label"] >= 0]
    weight = (
        pd.Series(np.asarray(SEVERITY_WEIGHTS)[long["label"].to_numpy()], index=long.index)
        .groupby([long["condition"], long["level"]])
        .sum()
        .reindex(pd.MultiIndex.from_tuples(TARGETS))
        .fillna(0.0)
        .to_numpy()[:, None]
    )
    total = np.broadcast_to(weight + len(SEVERITIES) * pseudo_count, p.shape)
    smoothed = np.divide(weight * p + pseudo_count, total, out=p.copy(), where=total > 0)
    table = pd.DataFrame(TARGETS, columns=["condition", "level"])
    for i, s in enumerate(SEVERITIES):
        table[s] = smoothed[:, i]
    return table


def prior_submission(labels: pd.DataFrame, study_ids: list[int]) -> pd.DataFrame:
    """Submission rows giving every study of `study_ids` the `prior_table` of `labels`."""
    prior = prior_table(labels)[list(SEVERITIES)].to_numpy()
    return _concat([_submission_rows(s, prior) for s in study_ids])


def load_prior(run_dir: str | Path) -> np.ndarray:
    """`prior.csv` of a run as `(25, 3)` probabilities in `TARGETS` order (DataError if absent)."""
    path = Path(run_dir) / PRIOR_CSV
    if not path.is_file():
        raise DataError(f"{path}: prior not found (not a run folder written by `spinegrade train`)")
    table = pd.read_csv(path).set_index(["condition", "level"])
    try:
        return table.loc[list(TARGETS), list(SEVERITIES)].to_numpy(dtype=np.float64)
    except KeyError as exc:
        raise DataError(f"{path}: missing target or column {exc}") from None


def read_folds(run_dir: str | Path) -> pd.DataFrame:
    """`folds.csv` of a run: `study_id, fold`."""
    path = Path(run_dir) / FOLDS_CSV
    if not path.is_file():
        raise DataError(f"{path}: folds not found (not a run folder written by `spinegrade train`)")
    return pd.read_csv(path)


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """`run.json` (data root, folds asked for, versions), or {} when absent."""
    path = Path(run_dir) / RUN_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# --- training ------------------------------------------------------------------------------------


def train(
    data_root: str | Path,
    run_dir: str | Path,
    cfg: Config,
    *,
    folds: list[int] | None = None,
    progress: bool = True,
) -> RunSummary:
    """Cross-validate both stages on the RSNA folder `data_root` into `run_dir` (resumable).

    `folds` trains only those folds (default: all `cfg.data.folds`); the OOF files and metrics then
    cover the complete folds' studies only (`metrics.json` says which). Works alone or under
    torchrun (see the module docstring). Raises SpinegradeError for unusable tables, folds that do
    not exist, or a run folder made with another config.
    """
    start = time.perf_counter()
    owns_group = not distributed.current().enabled  # else the caller set it up and tears it down
    info = distributed.init_distributed()
    data_root, run_dir = Path(data_root), Path(run_dir)
    show = progress and info.is_main
    try:
        wanted = _wanted_folds(folds, cfg.data.folds)
        _check_config(run_dir / CONFIG_YAML, cfg)
        tables, labels = _load(data_root, cfg, show)
        fold_table = make_folds(labels, cfg.data.folds, cfg.data.seed)
        _check_folds(run_dir / FOLDS_CSV, fold_table)
        _on_main(lambda: _write_run_files(run_dir, cfg, fold_table, labels, data_root, wanted))
        cached = _on_main(
            lambda: _build_cache(
                data_root, tables, fold_table, cache_dir_of(run_dir, cfg), cfg, show
            )
        )
        summary = RunSummary(run_dir, failed_studies=dict(cached.failed), rank=info.rank)
        done = set(completed_folds(run_dir))
        for k in tqdm(wanted, desc="folds", unit="fold", disable=not show, dynamic_ncols=True):
            if k in done:
                summary.folds_reused.append(k)
                continue
            _train_fold(k, data_root, run_dir, cfg, tables, labels, fold_table, cached, show)
            summary.folds_trained.append(k)
        from spinegrade.training.evaluate import evaluate

        summary.metrics = _on_main(lambda: evaluate(run_dir, labels, data_root=data_root))
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


def _load(data_root: Path, cfg: Config, show: bool) -> tuple[RsnaTables, pd.DataFrame]:
    """Tables and the labels of the studies to cross-validate (first `max_studies` by id)."""
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
    if cfg.data.max_studies is not None:
        labels = labels.head(cfg.data.max_studies).reset_index(drop=True)
    return tables, labels


def _wanted_folds(folds: list[int] | None, k: int) -> list[int]:
    if folds is None:
        return list(range(k))
    bad = [f for f in folds if not 0 <= f < k]
    if bad or not folds:
        raise ConfigError(f"folds {folds}: each must be in 0..{k - 1} (data.folds is {k})")
    return sorted(set(folds))


def _check_config(path: Path, cfg: Config) -> None:
    """Refuse to resume a run folder whose `config.yaml` differs in a key that changes results."""
    if not path.is_file():
        return
    try:
        old = to_dict(from_dict(Config, yaml.safe_load(path.read_text(encoding="utf-8")) or {}))
    except (yaml.YAMLError, SpinegradeError) as exc:
        raise ConfigError(f"{path}: unreadable config of an earlier run ({exc})") from None
    diff = [k for k in _diff_keys(old, to_dict(cfg)) if k not in RESUMABLE_KEYS]
    if diff:
        raise ConfigError(
            f"{path}: this run folder was trained with another config "
            f"(differs in {', '.join(diff[:5])}); use the same config or a new --out"
        )


def _check_folds(path: Path, fold_table: pd.DataFrame) -> None:
    """Refuse to resume a run folder whose `folds.csv` holds other studies or folds."""
    if not path.is_file():
        return
    old = pd.read_csv(path)
    if list(old.columns) != ["study_id", "fold"] or not np.array_equal(
        old.to_numpy(), fold_table.to_numpy()
    ):
        raise DataError(
            f"{path}: the studies or their folds differ from this data "
            f"({len(old)} vs {len(fold_table)} studies); use a new --out"
        )


def _write_run_files(
    run_dir: Path,
    cfg: Config,
    fold_table: pd.DataFrame,
    labels: pd.DataFrame,
    data_root: Path,
    wanted: list[int],
) -> None:
    """config.yaml, folds.csv, prior.csv and run.json (rank 0)."""
    save_config(cfg, run_dir / CONFIG_YAML)
    write_with(run_dir / FOLDS_CSV, lambda tmp: fold_table.to_csv(tmp, index=False))
    write_with(run_dir / PRIOR_CSV, lambda tmp: prior_table(labels).to_csv(tmp, index=False))
    write_json(
        run_dir / RUN_JSON,
        {
            "data_root": str(data_root.resolve()),
            "studies": len(fold_table),
            "folds_asked": wanted,
            "world_size": distributed.current().world_size,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    )


def _diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _diff_keys(a[key], b[key], name + ".")
        elif a.get(key) != b.get(key):
            out.append(name)
    return out


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
    run_dir: Path,
    cfg: Config,
    tables: RsnaTables,
    labels: pd.DataFrame,
    fold_table: pd.DataFrame,
    cached: CacheResult,
    show: bool,
) -> None:
    """Train both stages of fold `k`, predict its held-out studies, write the fold's files."""
    from spinegrade.grade import train_grader
    from spinegrade.localize.train import train_localizer

    fdir, info = fold_dir(run_dir, k), distributed.current()
    train_ids = _ids(fold_table, fold_table["fold"] != k)
    held = _ids(fold_table, fold_table["fold"] == k)
    readable = [s for s in train_ids if s in cached.paths]
    cache_dir = cache_dir_of(run_dir, cfg)
    timings: dict[str, float] = {}

    _say(f"fold {k}: training on {len(readable)} studies, {len(held)} held out", show)
    tick = time.perf_counter()
    torch.manual_seed(cfg.data.seed + 1000 * k)
    train_localizer(
        data_root, readable, fdir / LOCALIZER_DIR, cfg, cache_dir=cache_dir, progress=show
    )
    distributed.barrier()
    timings["localize_train_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    torch.manual_seed(cfg.data.seed + 1000 * k + 1)
    assert tables.coordinates is not None
    train_grader(
        data_root,
        readable,
        tables.coordinates,
        labels,
        fdir / GRADER_DIR,
        cfg,
        val_ids=[s for s in held if s in cached.paths],
        cache=cache_dir,
        progress=show,
    )
    distributed.barrier()
    timings["grade_train_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    prior = prior_table(labels[labels["study_id"].isin(train_ids)])[list(SEVERITIES)].to_numpy()
    baseline = _on_main(lambda: _fit_baseline(readable, cached, tables.coordinates))
    part = predict_fold(
        fdir,
        held[info.rank :: info.world_size],
        cached,
        prior,
        tables.coordinates,
        baseline,
        cfg,
        fold=k,
        rank=info.rank,
        progress=show,
    )
    parts = distributed.all_gather_object(part)
    timings["predict_s"] = time.perf_counter() - tick
    _on_main(lambda: _write_fold(run_dir, k, parts, timings, len(readable)))


def _ids(fold_table: pd.DataFrame, mask: pd.Series) -> list[int]:
    return fold_table.loc[mask, "study_id"].astype(int).tolist()


def _fit_baseline(train_ids: list[int], cached: CacheResult, coords: pd.DataFrame):  # type: ignore[no-untyped-def]
    """The localisation baseline (mean position per target) fitted on the training studies."""
    from spinegrade.localize.baseline import MeanPositionBaseline
    from spinegrade.localize.dataset import world_points

    by_study = dict(tuple(coords.groupby("study_id")))

    def labelled():  # type: ignore[no-untyped-def]
        for sid in (s for s in train_ids if s in by_study):
            study = load_cached(cached.paths[sid])
            yield study, world_points(study, by_study[sid])

    return MeanPositionBaseline.fit(labelled())  # type: ignore[arg-type]


def predict_fold(
    fdir: Path,
    study_ids: list[int],
    cached: CacheResult,
    prior: np.ndarray,
    coords: pd.DataFrame,
    baseline: Any | None,
    cfg: Config,
    *,
    fold: int,
    rank: int = 0,
    progress: bool = True,
) -> FoldPart:
    """Locate and grade `study_ids` with fold `fdir`'s models; prior `(25, 3)` where not graded.

    Also measures the localisation of the model and of `baseline` (when given) against the true
    points of `coords`.
    """
    from spinegrade.grade import Grader
    from spinegrade.localize.dataset import world_points
    from spinegrade.localize.evaluate import point_errors
    from spinegrade.localize.predict import Localizer
    from spinegrade.training.device import resolve_device

    device = resolve_device(cfg.device)
    localizer = Localizer.load(fdir / LOCALIZER_DIR, device)
    grader = Grader.load(fdir / GRADER_DIR / GRADER_MODEL, device)
    by_study = dict(tuple(coords.groupby("study_id")))
    points, preds, errors = [], [], []
    bar = tqdm(total=len(study_ids), desc=f"fold {fold} predict", disable=not progress, leave=False)
    for start in range(0, len(study_ids), PREDICT_CHUNK):
        items = []
        for sid in study_ids[start : start + PREDICT_CHUNK]:
            try:
                if sid not in cached.paths:
                    raise DataError(cached.failed.get(sid, f"study {sid}: not cached"))
                study = load_cached(cached.paths[sid])
                table = localizer.locate(study)
            except SpinegradeError as exc:
                points.append(_unlocated(sid, str(exc)))
                preds.append(_submission_rows(sid, prior))
                bar.update()
                continue
            truth = world_points(study, by_study.get(sid, coords.iloc[:0])).assign(study_id=sid)
            errors.append(point_errors(table, truth).assign(who="model"))
            if baseline is not None:
                errors.append(point_errors(baseline.locate(study), truth).assign(who="baseline"))
            items.append((sid, study, table))
        graded_probs = grader.predict_many([(study, table) for _, study, table in items])
        for (sid, _, table), probs in zip(items, graded_probs):
            graded = np.isfinite(probs).all(axis=1)
            table = table.assign(graded=graded)
            table.loc[~graded & (table["reason"] == ""), "reason"] = "point not on a readable slice"
            points.append(table)
            preds.append(_submission_rows(sid, np.where(graded[:, None], probs, prior)))
            bar.update()
    bar.close()
    return FoldPart(
        rank, list(study_ids), _concat(points).assign(fold=fold), _concat(preds), _concat(errors)
    )


def _unlocated(study_id: int, reason: str) -> pd.DataFrame:
    """25 rows for a study that could not be read or located."""
    from spinegrade.localize.predict import LOCATION_COLUMNS

    table = pd.DataFrame(
        [
            {
                "study_id": study_id,
                "condition": c,
                "level": lv,
                "confidence": 0.0,
                "method": "",
                "reason": reason,
            }
            for c, lv in TARGETS
        ],
        columns=list(LOCATION_COLUMNS),
    )
    return table.assign(graded=False)


def _submission_rows(study_id: int, probs: np.ndarray) -> pd.DataFrame:
    """Submission rows of one study from `(25, 3)` probabilities in `TARGETS` order."""
    rows = {"row_id": [row_id(study_id, c, lv) for c, lv in TARGETS]}
    return pd.DataFrame({**rows, **{s: probs[:, i] for i, s in enumerate(SEVERITIES)}})


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _write_fold(
    run_dir: Path, k: int, parts: list[FoldPart], timings: dict[str, float], n_train: int
) -> None:
    """The fold's files (atomically, `fold.json` last), then the run's OOF files from all folds."""
    fdir = fold_dir(run_dir, k)
    order = {sid: i for i, sid in enumerate(sorted(s for p in parts for s in p.study_ids))}
    points = _sorted(_concat([p.points for p in parts]), order)
    preds = _concat([p.predictions for p in parts])
    preds = preds.assign(_s=preds["row_id"].str.split("_").str[0].astype(int).map(order))
    preds = preds.sort_values("_s", kind="stable").drop(columns="_s")[list(SUBMISSION_COLUMNS)]
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
        },
    )
    merge_oof(run_dir)


def _sorted(points: pd.DataFrame, order: dict[int, int]) -> pd.DataFrame:
    return (
        points.assign(_s=points["study_id"].map(order))
        .sort_values("_s", kind="stable")
        .drop(columns="_s")
    )


def merge_oof(run_dir: str | Path) -> list[int]:
    """Rebuild the run's `oof_points.csv` and `oof_predictions.csv` from the complete folds."""
    run_dir = Path(run_dir)
    done = completed_folds(run_dir)
    for name in (OOF_POINTS, OOF_PREDICTIONS):  # read as text: every value is copied as written
        table = pd.concat(
            [
                pd.read_csv(fold_dir(run_dir, k) / name, dtype=str, keep_default_na=False)
                for k in done
            ],
            ignore_index=True,
        )
        write_with(run_dir / name, lambda tmp, t=table: t.to_csv(tmp, index=False))
    return done


def _say(message: str, show: bool) -> None:
    if show:
        tqdm.write(message)
