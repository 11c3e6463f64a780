"""Inference with a trained grader: a study and its 25 points in, `(25, 3)` probabilities out."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spinegrade.constants import TARGETS
from spinegrade.dicom import Study
from spinegrade.errors import DataError
from spinegrade.grade.augment import mirror_index, mirror_sample
from spinegrade.grade.dataset import CropParams, Located, locate_study, study_crops
from spinegrade.grade.loss import Targets
from spinegrade.grade.model import GraderNet, GraderSpec
from spinegrade.training.checkpoint import load_checkpoint
from spinegrade.training.runtime import Net, as_net


class Grader:
    """A trained grading network with its crop geometry, ready to predict on studies.

    The network is a `Net` (`training.runtime`: torch or ONNX Runtime) taking `crops (b, n, S,
    P, P)` float32 and `valid (b, n)` bool, `n` crop slots (`crop.slots(targets)`: the views of
    each target that `crop.views` names); a `GraderNet` given here is wrapped in a `TorchNet`.
    `targets` are its `t` target tokens in order (default: a `GraderNet`'s spec, else the 25
    `TARGETS`).
    """

    def __init__(
        self,
        model: GraderNet | Net,
        crop: CropParams,
        device: torch.device,
        targets: Targets | None = None,
    ) -> None:
        own = model.spec.targets if isinstance(model, GraderNet) else TARGETS
        self.targets = tuple(targets) if targets is not None else own
        if isinstance(model, GraderNet) and model.spec.views != crop.views:
            raise DataError(
                f"grader: the network's views {model.spec.views} are not its crops' {crop.views}"
            )
        self.slots = crop.slots(self.targets)
        self.net = as_net(model, device)
        self.crop = crop
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Grader:
        """Rebuild the grader from a `model.pt` written by `train_grader` (SpinegradeError if
        unusable)."""
        return cls(*load_grader_net(path), torch.device(device))

    def predict(self, study: Study, points: pd.DataFrame, *, tta: bool = False) -> np.ndarray:
        """Probabilities `(25, 3)` in `TARGETS` order; NaN rows for targets without a usable point.

        `points` has the columns of the coordinates table (`series_id, instance_number, condition,
        level, x, y`, snake_case), one row per target; targets may be missing. With `tta` the
        prediction is averaged with that of the left/right-mirrored study.
        """
        return self.predict_many([(study, points)], tta=tta)[0]

    def predict_many(
        self, items: Iterable[tuple[Study, pd.DataFrame]], *, tta: bool = False, batch_size: int = 8
    ) -> list[np.ndarray]:
        """:meth:`predict` for many (study, points) pairs, batched: a list of `(25, 3)` arrays."""
        located = (locate_study(study, points, self.crop) for study, points in items)
        return self.predict_located(located, tta=tta, batch_size=batch_size)

    @torch.no_grad()
    def predict_located(
        self,
        items: Iterable[list[Located | None]],
        *,
        tta: bool = False,
        batch_size: int = 8,
    ) -> list[np.ndarray]:
        """Probabilities `(t, 3)` per sample of located points (one entry per crop slot of the
        grader's `slots`, None where there is none; a target without any is a NaN row),
        batched."""
        out: list[np.ndarray] = []
        batch: list[tuple[np.ndarray, np.ndarray, list[str]]] = []
        targets = self.targets
        for located in items:
            batch.append(study_crops(located, self.crop, targets=targets))
            if len(batch) == batch_size:
                out.extend(self._run(batch, tta))
                batch = []
        if batch:
            out.extend(self._run(batch, tta))
        return out

    def _run(
        self, batch: list[tuple[np.ndarray, np.ndarray, list[str]]], tta: bool
    ) -> list[np.ndarray]:
        """Probabilities of a batch of study samples, NaN where there is no crop."""
        probs = self._probs(np.stack([c for c, _, _ in batch]), np.stack([v for _, v, _ in batch]))
        if tta:
            blank = np.zeros(len(self.targets), dtype=np.int64)
            mirrored = [
                mirror_sample(c, v, blank, views, slots=self.slots) for c, v, views in batch
            ]
            back = self._probs(
                np.stack([m[0] for m in mirrored]), np.stack([m[1] for m in mirrored])
            )
            index = mirror_index(self.targets)
            probs = (probs + back[:, index]) / 2  # the mirror swaps targets t and index[t]
        valid = self.slots.target_valid(np.stack([v for _, v, _ in batch]))
        probs[~valid] = np.nan
        return list(probs)

    def _probs(self, crops: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Softmax of the network on `crops (b, n, S, P, P)`, `valid (b, n)` -> `(b, t, 3)`
        float64."""
        logits = torch.from_numpy(self.net(crops, valid))
        return torch.softmax(logits, dim=-1).numpy().astype(np.float64)


def load_grader_net(path: str | Path) -> tuple[GraderNet, CropParams]:
    """The network (on CPU, eval mode) and crop geometry of a `model.pt` from `train_grader`."""
    state = load_checkpoint(path)
    meta = state.get("meta", {})
    # the checkpoint's weights replace the starting ones: never fetch or read those again
    model = GraderNet(GraderSpec(**{**meta["spec"], "pretrained": False}))
    model.load_state_dict(state["model"])
    return model.eval(), CropParams(**meta["crop"])
