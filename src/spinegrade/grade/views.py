"""Which views feed which condition: the crop slots of a study sample.

`grade.views` says, per condition group, whether its targets are graded from their sagittal crop,
their axial crop, or both (`ViewsConfig`). A sample then holds one crop per *slot*: slot `j` is
view `view[j]` of target `target[j]`, in target order, a target's views in `VIEWS` order. With the
default (spinal and foraminal sagittal, subarticular axial) there is one slot per target, in
`targets` order, and everything is as it was before views were a choice.

Only the point of each target is labelled (or located): the crop of the other view is cut where the
point's world position falls in the other view's stack (`grade.dataset.view_located`), on the
series `SERIES_OF_VIEW` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spinegrade.config import ViewsConfig
from spinegrade.constants import (
    AXIAL_T2,
    GROUP_OF_CONDITION,
    MIRROR_CONDITION,
    SAGITTAL_T1,
    SAGITTAL_T2,
    TARGETS,
)

#: The two views, in the order a target's slots take them.
VIEWS: tuple[str, ...] = ("sagittal", "axial")
BOTH = "both"
#: The series type each view of a condition group is cropped from.
SERIES_OF_VIEW: dict[tuple[str, str], str] = {
    ("spinal", "sagittal"): SAGITTAL_T2,
    ("spinal", "axial"): AXIAL_T2,
    ("foraminal", "sagittal"): SAGITTAL_T1,
    ("foraminal", "axial"): AXIAL_T2,
    ("subarticular", "sagittal"): SAGITTAL_T2,
    ("subarticular", "axial"): AXIAL_T2,
}


def mirror_index(targets: Sequence[tuple[str, str]] = TARGETS) -> np.ndarray:
    """`(t,)`: entry `i` is the index in `targets` of the target that `targets[i]` becomes in the
    mirrored patient (left <-> right). ValueError when a target's partner is not in `targets`."""
    targets = [tuple(t) for t in targets]
    try:
        return np.array([targets.index((MIRROR_CONDITION[c], lv)) for c, lv in targets])
    except ValueError:
        raise ValueError("mirror: the targets must hold both sides of every lateral one") from None


def views_of(views: ViewsConfig, condition: str) -> tuple[str, ...]:
    """The view(s) `condition` is graded from, in `VIEWS` order."""
    choice = getattr(views, GROUP_OF_CONDITION[condition])
    return VIEWS if choice == BOTH else (choice,)


@dataclass(frozen=True)
class CropSlots:
    """The crop slots of a sample over `targets`: slot `j` is view `view[j]` of target
    `target[j]` (an index into `targets`)."""

    targets: tuple[tuple[str, str], ...]
    target: tuple[int, ...]
    view: tuple[str, ...]

    @classmethod
    def of(
        cls, targets: Sequence[tuple[str, str]] = TARGETS, views: ViewsConfig | None = None
    ) -> CropSlots:
        """The slots of `targets` graded from `views` (default `ViewsConfig()`)."""
        views = views or ViewsConfig()
        pairs = [(t, v) for t, (c, _) in enumerate(targets) for v in views_of(views, c)]
        return cls(tuple(tuple(t) for t in targets), *map(tuple, zip(*pairs)))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.target)

    @property
    def one_per_target(self) -> bool:
        """Whether slot `t` is target `t` (no target has two views)."""
        return self.target == tuple(range(len(self.targets)))

    @property
    def fused(self) -> bool:
        """Whether some target has two slots (its features are fused)."""
        return not self.one_per_target

    def view_index(self) -> np.ndarray:
        """`(n,)` int64: the index in `VIEWS` of each slot's view."""
        return np.array([VIEWS.index(v) for v in self.view], dtype=np.int64)

    def assignment(self) -> np.ndarray:
        """`(n, t)` float32: 1 where slot `j` feeds target `t`."""
        out = np.zeros((len(self), len(self.targets)), dtype=np.float32)
        out[np.arange(len(self)), self.target] = 1.0
        return out

    def target_valid(self, valid: np.ndarray) -> np.ndarray:
        """`(..., t)` bool: a target has a crop when any of its slots has one; `valid (..., n)`."""
        if self.one_per_target:
            return np.asarray(valid, dtype=bool)
        return (np.asarray(valid, dtype=np.float32) @ self.assignment()) > 0

    def mirror_index(self) -> np.ndarray:
        """`(n,)`: slot `j` becomes slot `mirror[j]` in the left/right-mirrored patient (the same
        view of the target's partner, `mirror_index`)."""
        partner = mirror_index(self.targets)
        where = {(t, v): j for j, (t, v) in enumerate(zip(self.target, self.view))}
        return np.array([where[int(partner[t]), v] for t, v in zip(self.target, self.view)])
