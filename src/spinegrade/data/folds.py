"""Cross-validation folds: split by study, stratified on how severe each study is.

Each study gets one stratum key (see :func:`study_strata`) and scikit-learn's `StratifiedKFold`
assigns folds, so all of a study's images and targets stay in one fold and every fold gets a similar
mix of healthy and severe studies. Deterministic for a given `seed` and the same set of studies
(the input row order does not matter: studies are sorted first).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spinegrade.constants import CONDITION_GROUPS, CONDITIONS, LEVELS, SEVERITIES, target_column
from spinegrade.errors import DataError

#: Number of severe labels at which the stratum key stops counting ("2 or more").
_SEVERE_COUNT_CAP = 2


def study_strata(labels: pd.DataFrame) -> pd.Series:
    """Per-study stratum key `'<worst spinal severity>|<severe labels, capped at 2>'`.

    `labels`: wide table (study_id + 25 target columns, snake_case severities, NaN blank).
    Returns a string Series indexed like `labels`.
    """
    spinal = labels[[target_column(CONDITION_GROUPS["spinal"][0], lv) for lv in LEVELS]]
    rank = spinal.apply(lambda col: col.map({s: i for i, s in enumerate(SEVERITIES)}))
    worst = rank.max(axis=1).map(lambda i: "blank" if pd.isna(i) else SEVERITIES[int(i)])
    target_values = labels[[target_column(c, lv) for c in CONDITIONS for lv in LEVELS]]
    n_severe = (target_values == SEVERITIES[-1]).sum(axis=1).clip(upper=_SEVERE_COUNT_CAP)
    return worst + "|" + n_severe.astype(str)


def make_folds(labels: pd.DataFrame, k: int = 5, seed: int = 42) -> pd.DataFrame:
    """Assign each study to one of `k` folds -> DataFrame `study_id, fold` (sorted by study_id).

    Stratified on :func:`study_strata`; strata with fewer than `k` studies are merged into one
    'rare' stratum so that scikit-learn can split them. Raises DataError for k < 2, fewer studies
    than folds, or duplicate study ids.
    """
    if k < 2:
        raise DataError(f"folds: k must be at least 2, got {k}")
    if labels["study_id"].duplicated().any():
        dup = labels.loc[labels["study_id"].duplicated(), "study_id"].iloc[0]
        raise DataError(f"folds: study {dup} appears more than once in the labels")
    if len(labels) < k:
        raise DataError(f"folds: {len(labels)} studies cannot be split into {k} folds")
    ordered = labels.sort_values("study_id", kind="stable").reset_index(drop=True)
    strata = study_strata(ordered)
    counts = strata.map(strata.value_counts())
    strata = strata.where(counts >= k, "rare")
    if (strata == "rare").sum() < k:  # too few rare studies to spread: give them the biggest key
        strata = strata.replace("rare", strata.value_counts().idxmax())
    from sklearn.model_selection import StratifiedKFold  # here: it costs 1-4 s to import

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    fold = np.empty(len(ordered), dtype=np.int64)
    for index, (_, held_out) in enumerate(splitter.split(np.zeros(len(ordered)), strata)):
        fold[held_out] = index
    return pd.DataFrame({"study_id": ordered["study_id"].to_numpy(dtype=np.int64), "fold": fold})
