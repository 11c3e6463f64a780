"""The inner split of early stopping: by study, inside the training studies, stratified like the
outer folds, deterministic, and refused with one line when too small."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import SEVERITIES, TARGET_COLUMNS
from spinegrade.data.folds import make_folds
from spinegrade.errors import ConfigError
from spinegrade.training.selection import inner_split, selection_record


def _labels(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    codes = rng.choice(3, size=(n, len(TARGET_COLUMNS)), p=[0.8, 0.15, 0.05])
    table = pd.DataFrame(np.asarray(SEVERITIES, dtype=object)[codes], columns=list(TARGET_COLUMNS))
    table.insert(0, "study_id", 100 + np.arange(n))
    return table


def test_inner_split_is_one_inner_fold_of_the_training_studies() -> None:
    labels = _labels(60)
    outer = make_folds(labels, 3, seed=1)
    train = outer.loc[outer.fold != 0, "study_id"].tolist()
    held = set(outer.loc[outer.fold == 0, "study_id"])
    fit_ids, select_ids = inner_split(train, labels, folds=4, seed=1)
    assert set(fit_ids) | set(select_ids) == set(train) and not set(fit_ids) & set(select_ids)
    assert not set(select_ids) & held and len(select_ids) == len(train) // 4
    rows = labels[labels.study_id.isin(train)]
    expected = make_folds(rows, 4, seed=1).query("fold == 0").study_id.tolist()
    assert sorted(select_ids) == expected
    assert inner_split(train, labels, folds=4, seed=1) == (fit_ids, select_ids)  # deterministic


def test_studies_without_labels_are_fitted_on_and_too_few_are_refused() -> None:
    labels = _labels(12)
    fit_ids, select_ids = inner_split([*labels.study_id, 999], labels, folds=3, seed=0)
    assert 999 in fit_ids and len(select_ids) == 4
    with pytest.raises(ConfigError, match="lower optim.inner_folds") as err:
        inner_split(labels.study_id[:3].tolist(), labels, folds=5, seed=0)
    assert "\n" not in str(err.value)


def test_selection_record_names_the_lowest_inner_loss() -> None:
    history = [{"epoch": e, "select_loss": v} for e, v in zip((1, 2, 3), (0.9, 0.4, 0.4))]
    record = selection_record(history, epochs=5, patience=1, study_ids=[7])
    assert (record["epoch"], record["select_loss"]) == (2, 0.4)  # the first of equal losses
    assert record["stopped_early"] and record["epochs_run"] == 3 and record["inner_studies"] == [7]
