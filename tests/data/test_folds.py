"""Study-level stratified folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import TARGET_COLUMNS
from spinegrade.data.folds import make_folds, study_strata
from spinegrade.data.tables import read_labels
from spinegrade.errors import DataError


@pytest.fixture(scope="module")
def labels(rsna: Path) -> pd.DataFrame:
    return read_labels(rsna / "train.csv")


@pytest.mark.parametrize("k", [5, 4])
def test_real_folds_cover_each_study_once_and_are_balanced(labels: pd.DataFrame, k: int) -> None:
    folds = make_folds(labels, k=k, seed=42)
    assert sorted(folds["study_id"]) == sorted(labels["study_id"])
    assert folds["study_id"].is_unique
    sizes = folds["fold"].value_counts()
    assert set(sizes.index) == set(range(k)) and sizes.max() - sizes.min() <= 1

    has_severe = (labels.set_index("study_id")[list(TARGET_COLUMNS)] == "severe").any(axis=1)
    share = folds.assign(severe=folds["study_id"].map(has_severe)).groupby("fold")["severe"].mean()
    overall = has_severe.mean()
    assert (share - overall).abs().max() < 0.015, share.to_dict()  # ~6 studies of ~400 at most


def test_real_folds_are_deterministic(labels: pd.DataFrame) -> None:
    first = make_folds(labels, seed=42)
    shuffled = labels.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(first, make_folds(shuffled, seed=42))
    assert not first.equals(make_folds(labels, seed=7))


def _tiny(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    values = rng.choice(
        ["normal_mild", "moderate", "severe", np.nan], size=(n, 25), p=[0.7, 0.15, 0.1, 0.05]
    )
    return pd.DataFrame(
        {"study_id": np.arange(100, 100 + n), **dict(zip(TARGET_COLUMNS, values.T))}
    )


def test_rare_strata_are_pooled_and_small_sets_split() -> None:
    labels = _tiny(12)
    folds = make_folds(labels, k=3, seed=1)
    assert folds["fold"].value_counts().to_dict() == {0: 4, 1: 4, 2: 4}
    strata = study_strata(labels)
    assert strata.str.match(r"^(normal_mild|moderate|severe|blank)\|[012]$").all()


def test_bad_requests() -> None:
    with pytest.raises(DataError, match="at least 2"):
        make_folds(_tiny(10), k=1)
    with pytest.raises(DataError, match="3 studies cannot be split into 5 folds"):
        make_folds(_tiny(3), k=5)
    with pytest.raises(DataError, match="study 100 appears more than once"):
        make_folds(pd.concat([_tiny(6), _tiny(6)]), k=2)
