"""The challenge metric (`score`) and per-condition diagnostics (`detailed_metrics`).

The RSNA 2024 LSDC score is the plain mean of four sample-weighted log losses (`SCORE_TERMS`):
one 3-class log loss per condition group (spinal; foraminal left+right; subarticular left+right)
with weights 1/2/4 by the true class, and `any_severe_spinal`, a binary log loss per study.

How this implementation matches the official Kaggle metric (which calls `sklearn.metrics.log_loss`
on the raw submission, in the scikit-learn of 2024 with `eps=1e-15`):

- Probabilities are first clipped to [1e-15, 1 - 1e-15], then each row is divided by its sum: that
  is the order the old `log_loss` used. (scikit-learn >= 1.5 no longer normalises, so we do both
  steps here and hand sklearn rows that already sum to 1.) A consequence kept on purpose: values
  above 1 are clipped before normalising, so `[2, 1, 1]` scores as `[1/3, 1/3, 1/3]`.
- Blank labels are not scored (the official solution file holds no row for them).
- `any_severe_spinal`: per study, over its *labelled* spinal levels only: label = any level severe,
  weight = the largest of those levels' weights (4 if any severe, 2 if any moderate, else 1),
  prediction = the largest clipped-and-normalised severe probability, clipped again to
  [1e-15, 1 - 1e-15]. A study without a labelled spinal level is not in this term. (The official
  code takes the max of the raw severe column; for submissions whose rows sum to 1 that is the
  same.)
- A term without any scored row (e.g. a labels subset whose subarticular cells are all blank) is
  NaN and the score is the mean of the remaining terms; `n_rows` shows the 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, roc_auc_score

from spinegrade.constants import (
    ANY_SEVERE_SPINAL,
    CONDITION_GROUPS,
    CONDITIONS,
    LEVELS,
    PROB_EPS,
    SCORE_TERMS,
    SEVERITIES,
    SEVERITY_WEIGHTS,
    SUBMISSION_COLUMNS,
    TARGETS,
    parse_row_id,
    row_id,
)
from spinegrade.data.tables import labels_long, read_labels
from spinegrade.errors import DataError, SubmissionError

_CLASSES = list(range(len(SEVERITIES)))
_SPINAL = CONDITION_GROUPS["spinal"][0]


@dataclass
class ScoreResult:
    """The challenge score: the four terms (in `SCORE_TERMS` order), their mean, rows scored."""

    terms: dict[str, float]
    score: float
    n_rows: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN terms become None)."""
        return {
            "score": _none_if_nan(self.score),
            "terms": {k: _none_if_nan(v) for k, v in self.terms.items()},
            "n_rows": dict(self.n_rows),
        }


def score(labels: pd.DataFrame, submission: pd.DataFrame) -> ScoreResult:
    """Score `submission` (`row_id, normal_mild, moderate, severe`) against wide `labels`.

    `labels` is laid out like `RsnaTables.labels` (study_id + 25 snake_case target columns, NaN =
    blank). Every labelled row must be in the submission; rows of blank targets are allowed and
    ignored. Raises SubmissionError for a submission that cannot be scored (missing columns or
    rows, duplicate or unknown row ids, studies not in `labels`, NaN/inf/negative values) and
    DataError for labels that cannot be used (unknown severity strings, repeated study ids).
    """
    return score_from_aligned(*_aligned(labels, submission))


def score_files(labels_csv: str | Path, submission_csv: str | Path) -> ScoreResult:
    """:func:`score` for a train.csv-like labels file and a submission CSV."""
    return score(read_labels(labels_csv), read_submission(submission_csv))


def read_submission(path: str | Path) -> pd.DataFrame:
    """Read a submission CSV (values kept as written; :func:`score` checks them)."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: submission file not found")
    try:
        return pd.read_csv(path, dtype={"row_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SubmissionError(f"{path}: not a readable CSV ({reason})") from None


def normalise_probabilities(values: np.ndarray) -> np.ndarray:
    """(n, 3) non-negative scores -> (n, 3) probabilities: clip to [1e-15, 1-1e-15], then rows /
    sum."""
    clipped = np.clip(np.asarray(values, dtype=np.float64), PROB_EPS, 1.0 - PROB_EPS)
    return clipped / clipped.sum(axis=1, keepdims=True)


def constant_prior_submission(
    labels: pd.DataFrame,
    study_ids: Any | None = None,
    *,
    per: Literal["target", "condition"] = "target",
    weighted: bool = True,
) -> pd.DataFrame:
    """A submission that predicts the same class distribution for every study: the baseline.

    The distribution of each target (condition x level; `per="condition"` pools the five levels)
    is counted over the labelled cells of `labels` (blanks ignored). With `weighted` each cell
    counts with its metric weight 1/2/4, which makes it the constant that minimises the metric's
    weighted log loss; `weighted=False` gives the plain class frequencies. A target without any
    labelled cell gets 1/3 each. Rows: 25 per study of `study_ids` (default: the studies of
    `labels`) in `TARGETS` order. On the real train.csv the default scores about 0.79.
    """
    long = labels_long(labels)
    long = long[long["label"] >= 0]
    keys = ["condition", "level"] if per == "target" else ["condition"]
    counts = (
        pd.Series(_weights(long["label"].to_numpy()) if weighted else 1.0, index=long.index)
        .groupby([*(long[k] for k in keys), long["label"]])
        .sum()
        .unstack("label")
        .reindex(columns=_CLASSES)
        .fillna(0.0)
    )
    totals = counts.sum(axis=1)
    prior = counts.div(totals.where(totals > 0), axis=0).fillna(1.0 / len(SEVERITIES))
    wanted = (
        pd.MultiIndex.from_tuples(TARGETS) if per == "target" else pd.Index([c for c, _ in TARGETS])
    )
    table = prior.reindex(wanted).fillna(1.0 / len(SEVERITIES)).to_numpy()  # (25, 3)
    studies = labels["study_id"].tolist() if study_ids is None else [int(s) for s in study_ids]
    rows = [row_id(s, c, lv) for s in studies for c, lv in TARGETS]
    probs = np.tile(table, (len(studies), 1))
    return pd.DataFrame({"row_id": rows, **{s: probs[:, i] for i, s in enumerate(SEVERITIES)}})


def submission_rows(study_id: int, probs: np.ndarray) -> pd.DataFrame:
    """The 25 submission rows of one study from `(25, 3)` probabilities in `TARGETS` order."""
    return pd.DataFrame(
        {
            "row_id": [row_id(study_id, c, lv) for c, lv in TARGETS],
            **{s: probs[:, i] for i, s in enumerate(SEVERITIES)},
        }
    )


def smoothed_prior(labels: pd.DataFrame, pseudo_count: float = 1.0) -> np.ndarray:
    """Class prior per target `(25, 3)` in `TARGETS` order, fitted on wide `labels`.

    The metric-weighted class frequencies (`constant_prior_submission`: the constant that minimises
    the weighted log loss), smoothed as `(W p + a) / (W + 3 a)` with `W` the target's total label
    weight and `a = pseudo_count`, so that a class absent from a small training set does not get
    probability 0 (its log loss would be ~35). With thousands of studies the smoothing vanishes.
    """
    p = constant_prior_submission(labels, study_ids=[0])[list(SEVERITIES)].to_numpy()  # (25, 3)
    long = labels_long(labels)
    long = long[long["label"] >= 0]
    weight = (
        pd.Series(_weights(long["label"].to_numpy()), index=long.index)
        .groupby([long["condition"], long["level"]])
        .sum()
        .reindex(pd.MultiIndex.from_tuples(TARGETS))
        .fillna(0.0)
        .to_numpy()[:, None]
    )
    total = np.broadcast_to(weight + len(SEVERITIES) * pseudo_count, p.shape)
    return np.divide(weight * p + pseudo_count, total, out=p.copy(), where=total > 0)


def detailed_metrics(labels: pd.DataFrame, submission: pd.DataFrame) -> dict[str, Any]:
    """Score plus per-condition diagnostics, JSON-ready.

    Returns `{"score": ScoreResult.to_dict(), "conditions": {condition: {...}}, "groups":
    {group: {...}}}` where each condition (and each condition group, its conditions' rows pooled:
    left and right together) holds `n` (labelled rows), `log_loss` (weighted, like the metric),
    `levels` (weighted log loss per level, None without rows), `accuracy` and `macro_f1` of the
    argmax, `auc` (one-vs-rest ROC AUC per severity; None with a note when the truth lacks that
    class or has only it) and `confusion` (3x3 list, rows = true class, columns = argmax).
    """
    truth, probs = _aligned(labels, submission)
    result = score_from_aligned(truth, probs)
    y_all, levels = truth["label"].to_numpy(), truth["level"].to_numpy()

    def of(members: tuple[str, ...]) -> dict[str, Any]:
        rows = truth["condition"].isin(members).to_numpy()
        return _condition_metrics(y_all[rows], probs[rows], levels[rows])

    return {
        "score": result.to_dict(),
        "conditions": {c: of((c,)) for c in CONDITIONS},
        "groups": {g: of(members) for g, members in CONDITION_GROUPS.items()},
    }


def score_from_aligned(truth: pd.DataFrame, probs: np.ndarray) -> ScoreResult:
    """:func:`score` on already aligned rows: `truth` from `labels_long` (labelled rows only),
    `probs` (n, 3) normalised probabilities in the same order."""
    terms: dict[str, float] = {}
    n_rows: dict[str, int] = {}
    for group, members in CONDITION_GROUPS.items():
        rows = truth["condition"].isin(members).to_numpy()
        terms[group], n_rows[group] = _weighted_log_loss(
            truth["label"].to_numpy()[rows], probs[rows]
        )
    terms[ANY_SEVERE_SPINAL], n_rows[ANY_SEVERE_SPINAL] = _any_severe_spinal(truth, probs)
    scored = [terms[t] for t in SCORE_TERMS if not math.isnan(terms[t])]
    total = float(np.mean(scored)) if scored else math.nan
    return ScoreResult(
        terms={t: terms[t] for t in SCORE_TERMS},
        score=total,
        n_rows={t: n_rows[t] for t in SCORE_TERMS},
    )


# --- internals -----------------------------------------------------------------------------------


def _aligned(labels: pd.DataFrame, submission: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Labelled rows of `labels` (long form) and the submission's normalised (n, 3) probabilities
    for exactly those rows, in the same order."""
    if labels["study_id"].duplicated().any():
        dup = labels.loc[labels["study_id"].duplicated(), "study_id"].iloc[0]
        raise DataError(f"labels: study {dup} appears more than once; cannot score")
    truth = labels_long(labels)
    known_studies = set(truth["study_id"].tolist())
    sub = _checked_submission(submission, known_studies)
    truth = truth[truth["label"] >= 0].reset_index(drop=True)
    missing = ~truth["row_id"].isin(sub.index)
    if missing.any():
        raise SubmissionError(
            f"submission: {int(missing.sum())} labelled row(s) missing, "
            f"e.g. {truth.loc[missing, 'row_id'].iloc[0]}"
        )
    return truth, normalise_probabilities(sub.loc[truth["row_id"]].to_numpy())


def _checked_submission(submission: pd.DataFrame, known_studies: set[int]) -> pd.DataFrame:
    """Validate a submission -> float DataFrame (n, 3) indexed by row_id. SubmissionError if bad."""
    missing = [c for c in SUBMISSION_COLUMNS if c not in submission.columns]
    if missing:
        raise SubmissionError(
            f"submission: missing column(s) {', '.join(missing)}; "
            f"expected {', '.join(SUBMISSION_COLUMNS)}"
        )
    ids = submission["row_id"].astype(str).str.strip()
    duplicated = ids.duplicated()
    if duplicated.any():
        raise SubmissionError(
            f"submission: {int(duplicated.sum())} duplicate row_id(s), "
            f"e.g. {ids[duplicated].iloc[0]}"
        )
    for rid in ids:
        try:
            study = parse_row_id(rid)[0]
        except ValueError as exc:
            raise SubmissionError(f"submission: {exc}") from None
        if study not in known_studies:
            raise SubmissionError(
                f"submission: row {rid} is for study {study}, which is not in the labels"
            )
    values = submission[list(SEVERITIES)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    for bad, what in (
        (~np.isfinite(values), "NaN, infinite or non-numeric"),
        (values < 0, "negative"),
    ):
        if bad.any():
            row = int(np.nonzero(bad.any(axis=1))[0][0])
            raise SubmissionError(
                f"submission: {int(bad.any(axis=1).sum())} row(s) with {what} "
                f"values, e.g. {ids.iloc[row]}"
            )
    return pd.DataFrame(values, index=ids.to_numpy(), columns=list(SEVERITIES))


def _weights(y: np.ndarray) -> np.ndarray:
    """Class indices (n,) -> metric sample weights (n,) 1/2/4."""
    return np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)[y]


def _weighted_log_loss(y: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Weighted 3-class log loss of (n,) labels and (n, 3) normalised probabilities, and n."""
    if len(y) == 0:
        return math.nan, 0
    return float(log_loss(y, probs, sample_weight=_weights(y), labels=_CLASSES)), len(y)


def _any_severe_spinal(truth: pd.DataFrame, probs: np.ndarray) -> tuple[float, int]:
    """Binary weighted log loss of 'any spinal level severe' per study, and the number of
    studies."""
    spinal = (truth["condition"] == _SPINAL).to_numpy()
    if not spinal.any():
        return math.nan, 0
    y = truth["label"].to_numpy()[spinal]
    per_study = (
        pd.DataFrame(
            {
                "study_id": truth["study_id"].to_numpy()[spinal],
                "severe": (y == SEVERITIES.index("severe")).astype(np.int64),
                "weight": _weights(y),
                "p": probs[spinal, SEVERITIES.index("severe")],
            }
        )
        .groupby("study_id")
        .max()
    )
    p = np.clip(per_study["p"].to_numpy(), PROB_EPS, 1.0 - PROB_EPS)
    loss = log_loss(
        per_study["severe"].to_numpy(),
        p,
        sample_weight=per_study["weight"].to_numpy(),
        labels=[0, 1],
    )
    return float(loss), len(per_study)


def _condition_metrics(y: np.ndarray, p: np.ndarray, levels: np.ndarray) -> dict[str, Any]:
    """Diagnostics of one condition: labels (n,), probabilities (n, 3), level names (n,)."""
    if len(y) == 0:
        return {
            "n": 0,
            "log_loss": None,
            "levels": {lv: None for lv in LEVELS},
            "accuracy": None,
            "macro_f1": None,
            "auc": {s: None for s in SEVERITIES},
            "notes": ["no labelled rows"],
            "confusion": np.zeros((3, 3), dtype=int).tolist(),
        }
    predicted = p.argmax(axis=1)
    notes: list[str] = []
    auc: dict[str, float | None] = {}
    for k, severity in enumerate(SEVERITIES):
        positives = y == k
        if positives.all() or not positives.any():
            auc[severity] = None
            notes.append(
                f"AUC of {severity} skipped: the truth has "
                f"{'only' if positives.all() else 'no'} {severity} rows"
            )
        else:
            auc[severity] = float(roc_auc_score(positives, p[:, k]))
    return {
        "n": int(len(y)),
        "log_loss": _weighted_log_loss(y, p)[0],
        "levels": {
            lv: _none_if_nan(_weighted_log_loss(y[levels == lv], p[levels == lv])[0])
            for lv in LEVELS
        },
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(
            f1_score(y, predicted, labels=_CLASSES, average="macro", zero_division=0)
        ),
        "auc": auc,
        "notes": notes,
        "confusion": confusion_matrix(y, predicted, labels=_CLASSES).tolist(),
    }


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
