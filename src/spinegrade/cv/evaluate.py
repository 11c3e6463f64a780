"""Metrics and figures of a run folder, recomputed from its saved out-of-fold predictions.

`evaluate(run_dir)` reads `oof_predictions.csv`, `folds.csv`, each complete fold's
`localization_errors.csv` and `history.json` files, and the labels (from the data root recorded in
`run.json`, or given), and writes `metrics.json`, `localization.json` and `figures/`. Nothing is
re-trained or re-predicted, so it is cheap and deterministic.

The model's figures are those of the calibrated OOF predictions (`oof_calibrated.csv`: the grader's
temperatures cross-fitted over folds, `spinegrade.grade.calibrate`); `model_uncalibrated` scores the
raw ones. `calibration.json` holds each fold's temperatures, which prediction applies to it.

Comparators, all on exactly the studies of the OOF file:
- `prior`: the constant class prior fitted on each fold's *training* labels (`fold_<k>/prior.csv`,
  lightly smoothed), predicted for its held-out studies: the honest baseline, fitted like the model;
- `prior_in_sample`: the unsmoothed weighted class frequencies of the scored studies themselves:
  the best constant in hindsight, a bar no constant can pass;
- `oracle`: the data root's `oracle.csv` (synthetic sets: the Bayes-optimal predictions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from spinegrade.constants import (
    SCORE_TERMS,
    condition_from_label,
    level_from_label,
    parse_row_id,
    row_id,
)
from spinegrade.cv.folder import (
    CALIBRATION_JSON,
    FIGURES_DIR,
    LOCALIZATION_ERRORS,
    LOCALIZATION_JSON,
    METRICS_JSON,
    OOF_CALIBRATED,
    OOF_POINTS,
    OOF_PREDICTIONS,
    RunFolder,
)
from spinegrade.data.tables import labels_long, load_tables
from spinegrade.errors import DataError
from spinegrade.grade.calibrate import cross_fit
from spinegrade.io import write_json, write_with
from spinegrade.localize.evaluate import summarize
from spinegrade.metrics import (
    constant_prior_submission,
    detailed_metrics,
    read_submission,
    score,
    submission_rows,
)
from spinegrade.report.training_figures import write_figures

#: A synthetic data root's Bayes-optimal predictions (see `spinegrade.data.synthetic`).
ORACLE_CSV = "oracle.csv"


def evaluate(
    run_dir: str | Path,
    labels: pd.DataFrame | None = None,
    *,
    data_root: str | Path | None = None,
) -> dict[str, Any]:
    """Recompute `metrics.json`, `localization.json` and `figures/` of `run_dir`; return metrics.

    `labels` (wide, like `RsnaTables.labels`) default to the train.csv of `data_root`, itself
    defaulting to the data root recorded in `run.json`; `oracle.csv` is read from that data root
    when present. Raises DataError when the run has no complete fold or the labels cannot be found.
    """
    run = RunFolder(run_dir)
    run.check()
    run_dir = run.path
    done = run.completed_folds()
    oof_path = run_dir / OOF_PREDICTIONS
    if not done or not oof_path.is_file():
        raise DataError(
            f"{run_dir}: no complete fold yet (no fold_*/fold.json and {OOF_PREDICTIONS})"
        )
    recorded = run.info().get("data_root")
    root = Path(data_root) if data_root is not None else Path(recorded) if recorded else None
    if labels is None:
        if root is None:
            raise DataError(f"{run_dir}: no data root recorded in run.json; pass --data DATA_ROOT")
        labels = load_tables(root).labels
    assert labels is not None
    raw = read_submission(oof_path)
    folds = run.folds()
    studies = sorted({parse_row_id(r)[0] for r in raw["row_id"]})
    scored = labels[labels["study_id"].isin(studies)]
    if len(scored) != len(studies):
        raise DataError(
            f"{run_dir}: {len(studies) - len(scored)} OOF studies are not in the labels "
            f"(wrong --data?)"
        )
    fold_of = dict(zip(folds["study_id"].astype(int), folds["fold"].astype(int)))
    oof, calibration = cross_fit(raw, labels_long(scored), fold_of, graded_rows(run, raw["row_id"]))
    write_json(run_dir / CALIBRATION_JSON, calibration)
    write_with(run_dir / OOF_CALIBRATED, lambda tmp: oof.to_csv(tmp, index=False))
    metrics: dict[str, Any] = {
        "studies": len(studies),
        "folds": done,
        "folds_total": int(folds["fold"].max()) + 1,
        "coverage": _coverage_note(done, folds, len(studies)),
        "model": detailed_metrics(scored, oof),
        "model_uncalibrated": score(scored, raw).to_dict(),
        "temperatures": calibration["folds"],
        "prior": score(scored, oof_prior(run, done)).to_dict(),
        "prior_in_sample": score(scored, constant_prior_submission(scored)).to_dict(),
        "oracle": _oracle_score(root, scored, studies),
        "per_fold": {
            str(k): score(
                labels[labels["study_id"].isin(_fold_ids(folds, k))],
                _rows_of(oof, _fold_ids(folds, k)),
            ).to_dict()
            for k in done
        },
        "targets_not_graded": _not_graded(run_dir),
    }
    model_score = metrics["model"]["score"]["score"]
    oracle = metrics["oracle"]
    metrics["ratio_to_oracle"] = (
        model_score / oracle["score"]
        if oracle and oracle["score"] and model_score is not None
        else None
    )
    localization = localization_report(run, done)
    write_json(run_dir / METRICS_JSON, metrics)
    write_json(run_dir / LOCALIZATION_JSON, localization)
    write_figures(run_dir / FIGURES_DIR, run_dir, metrics, localization, scored, oof)
    return metrics


def graded_rows(run: RunFolder, row_ids: pd.Series) -> np.ndarray:
    """Which of `row_ids` the grader produced (`oof_points.csv` `graded`); all when it is absent."""
    path = run / OOF_POINTS
    if not path.is_file():
        return np.ones(len(row_ids), dtype=bool)
    points = pd.read_csv(path, usecols=["study_id", "condition", "level", "graded"])
    ids = [
        row_id(s, condition_from_label(c), level_from_label(lv))
        for s, c, lv in zip(points["study_id"], points["condition"], points["level"])
    ]
    graded = dict(zip(ids, points["graded"].astype(bool)))
    return np.array([graded.get(r, True) for r in row_ids], dtype=bool)


def oof_prior(run: RunFolder, done: list[int]) -> pd.DataFrame:
    """Each complete fold's training prior (`fold_<k>/prior.csv`, the one that fills its ungraded
    targets) for its held-out studies (submission rows)."""
    folds = run.folds()
    return pd.concat(
        [submission_rows(s, run.prior(k)) for k in done for s in _fold_ids(folds, k)],
        ignore_index=True,
    )


def localization_report(run: RunFolder, done: list[int]) -> dict[str, Any]:
    """Out-of-fold localisation figures of the model and the mean-position baseline (summarize)."""
    paths = [run.fold_dir(k) / LOCALIZATION_ERRORS for k in done]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: missing (an incomplete copy of the run folder?)")
    frames = [pd.read_csv(p) for p in paths if p.stat().st_size > 1]
    errors = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if errors.empty:
        return {"studies": 0, "model": None, "baseline": None}
    for col in ("located", "level_ok", "swap"):
        errors[col] = errors[col].astype(bool)
    return {
        "studies": int(errors["study_id"].nunique()),
        **{
            who: summarize(errors[errors["who"] == who].drop(columns="who"))
            for who in ("model", "baseline")
        },
    }


def metrics_table(metrics: dict[str, Any]) -> Table:
    """Rich table: the four terms and the score of the model, the OOF prior and the oracle."""
    oracle = metrics.get("oracle")
    table = Table(
        "term",
        "model",
        "uncalibrated",
        "prior (OOF)",
        "oracle",
        "rows",
        title=f"out-of-fold score, {metrics['studies']} studies, folds {metrics['folds']}",
    )
    model, prior = metrics["model"]["score"], metrics["prior"]
    for term in (*SCORE_TERMS, "score"):

        def get(d: dict[str, Any] | None, t: str = term) -> str:
            if not d:
                return "-"
            value = d["score"] if t == "score" else d["terms"][t]
            return "-" if value is None else f"{value:.4f}"

        rows = "" if term == "score" else str(model["n_rows"][term])
        bold = term == "score"
        cells = [get(model), get(metrics.get("model_uncalibrated")), get(prior), get(oracle)]
        table.add_row(*(f"[bold]{c}[/]" if bold else c for c in (term, *cells)), rows)
    if metrics.get("ratio_to_oracle"):
        table.caption = f"model / oracle = {metrics['ratio_to_oracle']:.3f}"
    return table


def _coverage_note(done: list[int], folds: pd.DataFrame, n: int) -> str:
    total = int(folds["fold"].max()) + 1
    if len(done) == total:
        return f"all {total} folds: every one of the {n} studies is out of fold"
    return (
        f"only folds {done} of {total} are complete: the metrics cover those folds' {n} of "
        f"{len(folds)} studies"
    )


def _fold_ids(folds: pd.DataFrame, k: int) -> list[int]:
    return folds.loc[folds["fold"] == k, "study_id"].astype(int).tolist()


def _rows_of(sub: pd.DataFrame, study_ids: list[int]) -> pd.DataFrame:
    wanted = set(study_ids)
    return sub[[parse_row_id(r)[0] in wanted for r in sub["row_id"]]]


def _oracle_score(
    root: Path | None, scored: pd.DataFrame, studies: list[int]
) -> dict[str, Any] | None:
    path = None if root is None else root / ORACLE_CSV
    if path is None or not path.is_file():
        return None
    return score(scored, _rows_of(read_submission(path), studies)).to_dict()


def _not_graded(run_dir: Path) -> dict[str, Any]:
    """How many OOF targets got the prior instead of a grade, and why (most common reasons)."""
    path = run_dir / OOF_POINTS
    if not path.is_file():
        return {}
    points = pd.read_csv(path, usecols=["graded", "reason"])
    missed = points[~points["graded"].astype(bool)]
    reasons = missed["reason"].fillna("").value_counts().head(10)
    return {
        "count": len(missed),
        "of": len(points),
        "reasons": {str(k): int(v) for k, v in reasons.items()},
    }
