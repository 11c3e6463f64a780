"""Temperature calibration of the grader, one temperature per condition group, cross-fitted.

A grader trained on a few dozen studies ranks well but is over-confident, and the challenge's
log loss (severe weighted 4) punishes confident mistakes hard. Dividing the logits by a temperature
`T > 1` (equivalently `p ** (1 / T)`, renormalised) keeps the ranking and fixes the confidence.

`T` is fitted by minimising the metric's weighted log loss, never below 1 (`T_RANGE`). To keep the
out-of-fold score honest
the temperatures are *cross-fitted*: fold `k`'s OOF rows are calibrated with temperatures fitted on
the OOF rows of the other folds only, and prediction applies to each fold's model the same
temperatures (so `predict --folds k` reproduces fold k's calibrated OOF rows). With a single
complete fold there is nothing to cross-fit from, and the predictions are left as they are (T = 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from spinegrade.constants import CONDITION_GROUPS, GROUP_OF_CONDITION, SEVERITIES, SEVERITY_WEIGHTS

#: Temperatures are searched in this range (log-uniformly). Calibration only softens (T >= 1): a
#: temperature below 1 fitted on other folds' models sharpens this fold's mistakes too. Measured on
#: the `tiny` e2e set (32 studies, 2 folds): fold 1 taught fold 0 a foraminal T of 0.64, and fold
#: 0's
#: foraminal loss rose from 0.92 to 1.13; on the 300-study run all 15 fold temperatures but one
#: (0.96) were above 1.
T_RANGE = (1.0, 20.0)
_EPS = 1e-12


def apply_temperature(probs: np.ndarray, t: float) -> np.ndarray:
    """`probs (n, 3)` -> `(n, 3)`: softmax(log p / t), i.e. the logits divided by `t`."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)) / t
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def weighted_log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """The metric's per-row loss: sample weights 1/2/4 by true class, `probs (n, 3)`, `labels
    (n,)`."""
    w = np.asarray(SEVERITY_WEIGHTS)[labels]
    p = np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0)
    return float((w * -np.log(p)).sum() / w.sum())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The `T` in `T_RANGE` minimising `weighted_log_loss(apply_temperature(probs, T), labels)`."""
    if len(labels) == 0:
        return 1.0
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    res = minimize_scalar(
        lambda u: weighted_log_loss(apply_temperature(probs, float(np.exp(u))), labels),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-3},
    )
    return float(np.exp(res.x))


def fit_group_temperatures(rows: pd.DataFrame) -> dict[str, float]:
    """One temperature per condition group from labelled rows (`condition`, `label`, severities)."""
    out = {}
    for group in CONDITION_GROUPS:
        mine = rows[rows["condition"].map(GROUP_OF_CONDITION) == group]
        out[group] = fit_temperature(
            mine[list(SEVERITIES)].to_numpy(), mine["label"].to_numpy(dtype=int)
        )
    return out


def calibrate_probs(
    probs: np.ndarray, conditions: Sequence[str], temperatures: dict[str, float]
) -> np.ndarray:
    """`probs (n, 3)` of targets of `conditions (n,)` -> a copy with each condition group's
    temperature applied; rows holding NaN (not graded) stay as they are."""
    out = np.array(probs, dtype=np.float64)
    group = np.array([GROUP_OF_CONDITION[c] for c in conditions])
    graded = ~np.isnan(out).any(axis=1)
    for g, t in temperatures.items():
        m = (group == g) & graded
        if m.any():
            out[m] = apply_temperature(out[m], t)
    return out


def calibrate_rows(rows: pd.DataFrame, temperatures: dict[str, float]) -> pd.DataFrame:
    """A copy of submission-like `rows` (with a `condition` column) with each group's temperature
    applied."""
    out = rows.copy()
    out[list(SEVERITIES)] = calibrate_probs(
        out[list(SEVERITIES)].to_numpy(), out["condition"].tolist(), temperatures
    )
    return out


def cross_fit(
    oof: pd.DataFrame,
    truth: pd.DataFrame,
    fold_of_study: dict[int, int],
    graded: Sequence[bool] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Calibrate out-of-fold predictions without using a fold's own labels for its rows.

    `oof`: submission rows (`row_id` + severities); `truth`: `labels_long` rows (`row_id`,
    `study_id`,
    `condition`, `label`, -1 for blank); `fold_of_study`: the fold of each OOF study; `graded`
    (aligned with `oof`, default all): which rows the grader produced. The others hold the prior,
    which is neither fitted on nor changed, exactly as the ensemble calibrates only graded targets.
    Returns the calibrated OOF rows (same order and columns) and a record: the temperatures of each
    fold (fitted on the other folds), which prediction applies to that fold's model.
    """
    table = oof.merge(
        truth[["row_id", "study_id", "condition", "label"]],
        on="row_id",
        how="left",
        validate="one_to_one",
    )
    table["fold"] = table["study_id"].map(fold_of_study)
    table["graded"] = True if graded is None else np.asarray(graded, dtype=bool)
    labelled = table[(table["label"] >= 0) & table["graded"]]
    folds = sorted(int(k) for k in table["fold"].dropna().unique())
    record: dict[str, Any] = {
        "method": "temperature per condition group, cross-fitted over folds",
        "folds": {},
    }
    if len(folds) < 2:
        record["note"] = "fewer than 2 complete folds: not calibrated (T = 1)"
        return oof.copy(), record
    parts = []
    for k in folds:
        temps = fit_group_temperatures(labelled[labelled["fold"] != k])
        record["folds"][str(k)] = temps
        mine = table[table["fold"] == k]
        parts.append(
            pd.concat([calibrate_rows(mine[mine["graded"]], temps), mine[~mine["graded"]]])
        )
    calibrated = pd.concat(parts).set_index("row_id").loc[oof["row_id"]].reset_index()
    return calibrated[list(oof.columns)], record
