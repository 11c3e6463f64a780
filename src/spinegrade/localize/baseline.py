"""The trivial baseline stage 1 is measured against: the mean position of each target.

For each (condition, level), the mean normalised in-plane position `((x + 0.5) / cols,
(y + 0.5) / rows)` and the mean relative slice position `index / (slices - 1)` over the training
labels, where `index` counts the slices of all stacks of the series in order. Prediction puts each
target there on the first series of the condition's type. No image is looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spinegrade.constants import SERIES_OF_CONDITION, TARGETS
from spinegrade.dicom import Series, Study
from spinegrade.localize.predict import Point, location_table


def _offsets(series: Series) -> np.ndarray:
    """Global index of the first slice of each stack, plus the total: `(stacks + 1,)`."""
    return np.concatenate([[0], np.cumsum([v.shape[0] for v in series.stacks])])


@dataclass
class MeanPositionBaseline:
    """(condition, level) -> mean `(u, v, r)`: normalised column, row and relative slice
    position."""

    means: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, labelled: list[tuple[Study, pd.DataFrame]]) -> MeanPositionBaseline:
        """Fit from `(study, world_points(study, coords))` pairs of the training studies."""
        acc: dict[tuple[str, str], list[np.ndarray]] = {}
        for study, pts in labelled:
            by_id = {s.series_id: s for s in study.series}
            for p in pts.itertuples(index=False):
                series = by_id[p.series_id]
                vol = series.stacks[p.stack]
                total = _offsets(series)
                r = (total[p.stack] + p.slice) / max(total[-1] - 1, 1)
                u, v = (p.x + 0.5) / vol.shape[2], (p.y + 0.5) / vol.shape[1]
                acc.setdefault((p.condition, p.level), []).append(np.array([u, v, r]))
        return cls({k: np.mean(v, axis=0) for k, v in acc.items()})

    def locate(self, study: Study) -> pd.DataFrame:
        """All 25 targets at their mean positions (same table as `Localizer.locate`)."""
        points: dict[tuple[str, str], Point | str] = {}
        for cond, level in TARGETS:
            series = study.first(SERIES_OF_CONDITION[cond])
            mean = self.means.get((cond, level))
            if series is None or not series.stacks:
                points[(cond, level)] = f"no {SERIES_OF_CONDITION[cond]} series"
                continue
            if mean is None:
                points[(cond, level)] = "no training label for this target"
                continue
            total = _offsets(series)
            g = int(np.clip(np.rint(mean[2] * (total[-1] - 1)), 0, total[-1] - 1))
            j = int(np.searchsorted(total, g, side="right") - 1)
            vol, s = series.stacks[j], g - total[j]
            x, y = mean[0] * vol.shape[2] - 0.5, mean[1] * vol.shape[1] - 0.5
            points[(cond, level)] = Point(
                int(series.series_id),
                j,
                int(s),
                int(vol.instance_numbers[s]),
                float(x),
                float(y),
                vol.voxel_to_world([[x, y, s]])[0],
                0.0,
                "mean_position",
            )
        return location_table(study, points)
