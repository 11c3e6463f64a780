"""Early stopping that keeps out-of-fold figures honest: the epoch is chosen on an inner split of
the TRAINING studies, by study, never on the held-out fold.

A stage with `optim.early_stopping` splits its training studies with :func:`split_for` (one of
`optim.inner_folds` folds, stratified like the outer folds), trains on the rest, and hands `fit` a
:class:`Selection`: the inner studies' unaugmented samples. The split happens inside the stage,
from the training studies it is given, so no caller can select on its held-out studies. `fit`
keeps the weights of the epoch with the lowest loss on them and records the split and the epoch
(`selection.json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch.utils.data import Dataset

from spinegrade.config import OptimConfig
from spinegrade.data.folds import make_folds
from spinegrade.errors import ConfigError, DataError

#: What `fit` writes beside `history.json` when it selected the epoch.
SELECTION_JSON = "selection.json"


@dataclass
class Selection:
    """The inner studies that choose the epoch, and their samples (no augmentation)."""

    dataset: Dataset
    study_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


def inner_split(
    study_ids: list[int], labels: pd.DataFrame, folds: int, seed: int
) -> tuple[list[int], list[int]]:
    """`(fit_ids, select_ids)` of the training studies `study_ids` (disjoint, in their order).

    `select_ids` is fold 0 of `make_folds` over the studies' rows of the wide `labels` (stratified
    by study, like the outer folds); studies without a labels row are always fitted on. Raises
    ConfigError when there are too few labelled studies for `folds` inner folds.
    """
    ids = [int(s) for s in study_ids]
    rows = labels[labels["study_id"].astype(int).isin(ids)]
    try:
        inner = make_folds(rows, folds, seed)
    except DataError as exc:
        raise ConfigError(
            f"early stopping: no inner split of {len(rows)} labelled training studies into "
            f"{folds} folds ({exc}); lower optim.inner_folds or turn optim.early_stopping off"
        ) from None
    chosen = set(inner.loc[inner["fold"] == 0, "study_id"].astype(int))
    return [s for s in ids if s not in chosen], [s for s in ids if s in chosen]


def split_for(
    optim: OptimConfig, study_ids: list[int], labels: pd.DataFrame, seed: int
) -> tuple[list[int], list[int]]:
    """:func:`inner_split` with `optim.inner_folds` when `optim.early_stopping` is on; else every
    study is fitted on and none selects."""
    if not optim.early_stopping:
        return [int(s) for s in study_ids], []
    return inner_split(study_ids, labels, optim.inner_folds, seed)


def selection_record(
    history: list[dict[str, float]], epochs: int, patience: int, study_ids: list[int]
) -> dict[str, Any]:
    """What `selection.json` holds: the chosen epoch (lowest `select_loss`), the inner studies."""
    best = min(history, key=lambda h: h["select_loss"])
    return {
        "metric": "select_loss: the stage's loss on the inner split, unaugmented",
        "epoch": int(best["epoch"]),
        "select_loss": float(best["select_loss"]),
        "epochs_run": len(history),
        "epochs": epochs,
        "stopped_early": len(history) < epochs,
        "patience": patience,
        "inner_studies": [int(s) for s in study_ids],
    }
