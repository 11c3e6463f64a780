"""Where a synthetic set's labels and series layouts come from.

Two sources, one interface (`name`, `priors()` (25, 3), `draw(rng)` -> (row index, codes (25,)),
`layout_rows()` (studies, 3)):

- :class:`RealLabels`: the real RSNA `train.csv` and `train_series_descriptions.csv`, when found
  (`--labels DIR`, `$SPINEGRADE_RSNA_DIR`, or `shared/data/rsna` beside the repository): each study
  draws one real label row and one real study's series layout.
- :class:`~spinegrade.data.synthetic.label_model.LabelModel`: the bundled label model fitted from
  those files (class shares, blank rates, latent correlations, layout counts), used whenever no
  real train.csv is found, e.g. on a fresh clone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np

from spinegrade.constants import SERIES_TYPES
from spinegrade.data.synthetic.label_model import LabelModel
from spinegrade.data.synthetic.labels import LabelRows
from spinegrade.errors import DataError

#: Environment variable naming the folder of the real label files.
LABELS_ENV = "SPINEGRADE_RSNA_DIR"
#: The repository root of a source checkout (its `shared/` and `../shared/` are looked in).
REPO = Path(__file__).resolve().parents[4]


@dataclass(frozen=True)
class RealLabels:
    """The real label rows (`rows`) and series layouts (`layouts` (studies, 3)) read from `root`."""

    root: Path
    rows: LabelRows
    layouts: np.ndarray

    @classmethod
    def load(cls, root: str | Path) -> RealLabels:
        """Read `train.csv` and `train_series_descriptions.csv` of the RSNA folder `root`."""
        return cls(Path(root), LabelRows.load(root), real_layouts(Path(root)))

    @property
    def name(self) -> str:
        """How summaries name this label source."""
        return f"real train.csv at {self.root / 'train.csv'}"

    def priors(self) -> np.ndarray:
        """Real class shares per target, shape (25, 3)."""
        return self.rows.priors()

    def draw(self, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """One real row, uniformly: its index and codes (25,)."""
        index = int(rng.integers(len(self.rows.codes)))
        return index, self.rows.codes[index]

    def layout_rows(self) -> np.ndarray:
        """The series layout of every real study, (studies, 3)."""
        return self.layouts


#: What synthetic labels are drawn from.
LabelSource: TypeAlias = RealLabels | LabelModel


def find_labels_root(labels_root: str | Path | None = None) -> Path | None:
    """The folder holding the real `train.csv`: `labels_root` (DataError if it has none), else the
    first of $SPINEGRADE_RSNA_DIR and the project's `shared/data/rsna` (inside or beside the
    repository) that has one, else None."""
    if labels_root is not None:
        if not (Path(labels_root) / "train.csv").is_file():
            raise DataError(f"{labels_root}: no train.csv in the labels folder")
        return Path(labels_root)
    for cand in (
        os.environ.get(LABELS_ENV),
        REPO / "shared/data/rsna",
        REPO.parent / "shared/data/rsna",
    ):
        if cand and (Path(cand) / "train.csv").is_file():
            return Path(cand)
    return None


def label_source(labels: LabelSource | str | Path | None = None) -> LabelSource:
    """The source to draw from: `labels` itself if a source, the real files in the folder
    `labels`, or (None) the real files :func:`find_labels_root` finds, else the bundled model."""
    if isinstance(labels, (RealLabels, LabelModel)):
        return labels
    root = find_labels_root(labels)
    return LabelModel.load() if root is None else RealLabels.load(root)


def real_layouts(root: Path) -> np.ndarray:
    """Series counts per real study, (studies, 3) = (Sagittal T1, Sagittal T2/STIR, Axial T2)."""
    from spinegrade.data.tables import load_tables

    series = load_tables(root).series
    counts = series.groupby(["study_id", "series_description"]).size().unstack(fill_value=0)
    return counts.reindex(columns=list(SERIES_TYPES), fill_value=0).to_numpy(np.int64)


__all__ = [
    "LABELS_ENV",
    "LabelSource",
    "RealLabels",
    "find_labels_root",
    "label_source",
    "real_layouts",
]
