"""A trained run folder as one predictor: some or all of its folds' localisers and graders.

Per study, each fold localises the 25 targets with its own localiser and grades them with its own
grader from those points (exactly what its out-of-fold evaluation measured: the out-of-fold rows
of `spinegrade train` are this class's predictions with an ensemble of that one fold). Each fold's
probabilities are first divided by that fold's temperatures (`calibration.json`: one per condition
group, fitted on the *other* folds' out-of-fold rows; absent: T = 1). The probabilities are the
mean over the folds that graded the target; a target no fold could grade gets the mean of the
folds' training priors (`fold_<k>/prior.csv`) and a flag. The point reported for a target is the
folds' medoid in LPS millimetres (the located point closest, in sum, to the other folds' points);
`spread_mm` is the largest distance of another fold's point from it.

With `cam`, each graded target also gets a Grad-CAM map (`grade.cam`) of its most likely
severity's logit over its crop at the reported point: every fold's torch grader explains the same
crop and the maps are averaged. With the ONNX engine the maps come from the torch checkpoints the
ONNX networks were exported from (the same weights; ONNX Runtime computes no gradients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spinegrade.constants import SERIES_OF_CONDITION, SEVERITIES, TARGETS, row_id
from spinegrade.cv.folder import RunFolder
from spinegrade.dicom import Study
from spinegrade.errors import ConfigError
from spinegrade.grade import Grader
from spinegrade.grade.calibrate import calibrate_probs
from spinegrade.grade.cam import grad_cam, peak_offset_mm
from spinegrade.grade.dataset import locate_study, study_crops
from spinegrade.grade.model import GraderNet
from spinegrade.grade.predict import load_grader_net
from spinegrade.localize.dataset import PreparedStacks
from spinegrade.localize.predict import Localizer
from spinegrade.report.cams import CamImage
from spinegrade.timing import Timing
from spinegrade.training.device import resolve_device
from spinegrade.training.runtime import TorchNet

#: Engines that run the networks: the torch checkpoints, or their ONNX export (ONNX Runtime).
TORCH, ONNX = "torch", "onnx"
ENGINES = (TORCH, ONNX)

#: Flags a target can carry in `predictions.json`, the report and the submission's side tables.
FLAG_PRIOR = "prior"  #: probabilities are the trained class prior, not a model output
FLAG_MISSING_SERIES = "missing_series"  #: the study has no series of the type this condition needs
FLAG_NOT_LOCATED = "not_located"  #: no fold found the target's point (see `reason`)
FLAG_NOT_GRADED = "not_graded"  #: located, but no fold could crop and grade it
FLAG_FOLDS_DISAGREE = "folds_disagree"  #: the folds' points lie more than DISAGREE_MM apart
FLAG_STUDY_FAILED = "study_failed"  #: the whole study could not be read (see errors.csv)
FLAG_TEXT = {
    FLAG_PRIOR: "prior used",
    FLAG_MISSING_SERIES: "series missing",
    FLAG_NOT_LOCATED: "not located",
    FLAG_NOT_GRADED: "not graded",
    FLAG_FOLDS_DISAGREE: "folds disagree on the location",
    FLAG_STUDY_FAILED: "study unreadable",
}
# No flag on the localisation confidence (the heatmap peak): on demo runs it did not separate good
# points from bad ones (out-of-fold), so a threshold on it would flag noise. It is reported as is.
#: Spread (mm) of the folds' points above which a target is flagged.
DISAGREE_MM = 10.0

#: Columns of `StudyPrediction.targets`, one row per target in `TARGETS` order.
TARGET_COLUMNS = (
    "row_id",
    "condition",
    "level",
    *SEVERITIES,
    "series_id",
    "series_type",
    "stack_index",
    "slice_index",
    "instance_number",
    "x",
    "y",
    "world_x",
    "world_y",
    "world_z",
    "confidence",
    "method",
    "spread_mm",
    "folds_graded",
    "reason",
    "flags",
)
_LOCATION = (
    "series_id",
    "stack_index",
    "slice_index",
    "instance_number",
    "x",
    "y",
    "world_x",
    "world_y",
    "world_z",
    "confidence",
    "method",
)


@dataclass
class FoldModels:
    """One fold's trained stages and its temperatures."""

    fold: int
    localizer: Localizer
    grader: Grader
    temperatures: dict[str, float] = field(
        default_factory=dict
    )  #: per condition group; absent: T = 1
    cam_net: GraderNet | None = None  #: the torch grader Grad-CAM explains (None: no maps)

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """This fold's `(25, 3)` probabilities (NaN rows where not graded) -> calibrated."""
        return calibrate_probs(probs, [c for c, _ in TARGETS], self.temperatures)


@dataclass
class StudyPrediction:
    """A study's 25 predictions: probabilities `(25, 3)` (prior where not graded) and the table."""

    study_id: int
    probs: np.ndarray
    targets: pd.DataFrame  #: TARGET_COLUMNS
    timing: Timing = field(default_factory=Timing)  #: stages prepare, localize, grade, cam
    cams: dict[str, CamImage] = field(default_factory=dict)  #: row_id -> map (graded targets)


class Ensemble:
    """Folds of a run: `predict(study)` localises, grades, averages and fills from the prior."""

    def __init__(self, folds: list[FoldModels], prior: np.ndarray, device: torch.device) -> None:
        self.folds = folds
        self.prior = prior  #: (25, 3): the mean of the folds' training priors, for ungraded targets
        self.device = device

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        *,
        device: str | None = None,
        folds: Sequence[int] | None = None,
        engine: str = TORCH,
        onnx_dir: str | Path | None = None,
        cam: bool = False,
    ) -> Ensemble:
        """The complete folds of a run folder (`folds` picks some of them).

        `engine` runs the networks: `torch` (the checkpoints) or `onnx` (ONNX Runtime on the
        networks `spinegrade export` wrote to `onnx_dir`, default `RUN/onnx`). `cam` keeps each
        fold's torch grader for Grad-CAM (loading it from the checkpoint with `onnx`).
        """
        run = RunFolder(run_dir)
        run.check()
        return cls.of_folds(
            run, run.chosen_folds(folds), device=device, engine=engine, onnx_dir=onnx_dir, cam=cam
        )

    @classmethod
    def of_folds(
        cls,
        run: RunFolder,
        folds: Sequence[int],
        *,
        device: str | None = None,
        engine: str = TORCH,
        onnx_dir: str | Path | None = None,
        cam: bool = False,
    ) -> Ensemble:
        """The given folds' trained models, complete or not (out-of-fold prediction in training)."""
        dev = resolve_device(device or run.config().device)
        if engine == TORCH:
            stages = [
                (Localizer.load(run.localizer_dir(k), dev), Grader.load(run.grader_model(k), dev))
                for k in folds
            ]
        elif engine == ONNX:
            from spinegrade.cv.export import onnx_folds

            nets = onnx_folds(run, onnx_dir or run.onnx_dir(), folds, dev)
            stages = [(n.localizer(dev), n.grade(dev)) for n in nets]
        else:
            raise ConfigError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
        models = [
            FoldModels(
                k, loc, grader, run.temperatures(k), _cam_net(run, k, grader, dev) if cam else None
            )
            for k, (loc, grader) in zip(folds, stages)
        ]
        return cls(models, run.ensemble_prior(folds), dev)

    def predict(self, study: Study, *, tta: bool = False, cam: bool = False) -> StudyPrediction:
        """Locate and grade the 25 targets of `study` with every fold; see the module docstring.

        `cam` adds the Grad-CAM maps (`StudyPrediction.cams`; stage "cam") where the folds were
        loaded with `cam`."""
        timing = Timing()
        points, probs = [], []
        prepared = PreparedStacks()  # each stack is normalised and resized once, for all folds
        for f in self.folds:
            with timing.measure("localize"):
                points.append(f.localizer.locate(study, prepared))
            with timing.measure("grade"):
                probs.append(f.calibrate(f.grader.predict(study, points[-1], tta=tta)))
        pred = combine(int(study.study_id), study, points, np.stack(probs), self.prior)
        timing.add(prepared.timing)  # "prepare" happened inside "localize": count it once
        for seconds in (timing.wall, timing.cpu):
            seconds["localize"] -= seconds.get("prepare", 0.0)
        if cam:
            with timing.measure("cam"):
                pred.cams = self.cams(study, pred)
        pred.timing = timing
        return pred

    def cams(self, study: Study, pred: StudyPrediction) -> dict[str, CamImage]:
        """Grad-CAM of each graded target's most likely severity over its crop at the reported
        point, averaged over the folds loaded with `cam` (those with the first one's crop
        geometry) and scaled to a maximum of 1: row_id -> map."""
        folds = [f for f in self.folds if f.cam_net is not None]
        if not folds:
            return {}
        crop = folds[0].grader.crop
        slots = crop.slots()
        target_of = np.asarray(slots.target)
        crops, valid, _ = study_crops(locate_study(study, pred.targets, crop), crop)
        valid &= pred.targets["folds_graded"].to_numpy()[target_of] > 0
        classes = pred.probs.argmax(axis=1)
        maps = [
            grad_cam(f.cam_net, crops, valid, classes)
            for f in folds
            if f.cam_net is not None and f.grader.crop == crop
        ]
        heat = np.mean(maps, axis=0)  # (n slots, P, P); NaN where not valid
        out = {}
        for j in np.flatnonzero(valid):
            t = int(target_of[j])
            row_id = str(pred.targets["row_id"].iloc[t])
            if row_id in out:  # a second view of the target: the map of its first is shown
                continue
            h = heat[j] / heat[j].max() if heat[j].max() > 0 else heat[j]
            out[row_id] = CamImage(
                crops[j, crop.slices // 2], h, SEVERITIES[classes[t]], peak_offset_mm(h, crop)
            )
        return out


def _cam_net(run: RunFolder, fold: int, grader: Grader, device: torch.device) -> GraderNet:
    """The fold's torch grader: the one `grader` runs, else (ONNX) its checkpoint's."""
    net = grader.net
    if isinstance(net, TorchNet) and isinstance(net.module, GraderNet):
        return net.module
    return load_grader_net(run.grader_model(fold))[0].to(device)


def combine(
    study_id: int,
    study: Study,
    points: list[pd.DataFrame],
    probs: np.ndarray,
    prior: np.ndarray,
) -> StudyPrediction:
    """Fold outputs -> one prediction: `points` k location tables (25 rows), `probs (k, 25, 3)`."""
    graded = ~np.isnan(probs).any(axis=2)  # (k, 25)
    n_graded = graded.sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = (
            np.where(graded[..., None], probs, 0.0).sum(axis=0) / np.maximum(n_graded, 1)[:, None]
        )
    final = np.where((n_graded > 0)[:, None], mean, prior)
    types = {s.series_id: s.series_type for s in study.series}
    rows = []
    for t, (cond, level) in enumerate(TARGETS):
        loc, spread = _medoid([p.iloc[t] for p in points])
        row = {
            "row_id": row_id(study_id, cond, level),
            "condition": cond,
            "level": level,
            **dict(zip(SEVERITIES, final[t])),
            **loc,
            "spread_mm": spread,
            "folds_graded": int(n_graded[t]),
        }
        row["series_type"] = types.get(loc["series_id"]) if loc["series_id"] is not None else None
        row["reason"] = (
            ""
            if loc["series_id"] is not None
            else next(
                (str(p.iloc[t]["reason"]) for p in points if str(p.iloc[t]["reason"])),
                "not located",
            )
        )
        row["flags"] = _flags(study, cond, row, n_graded[t] > 0)
        rows.append(row)
    return StudyPrediction(study_id, final, pd.DataFrame(rows, columns=list(TARGET_COLUMNS)))


def prior_prediction(study_id: int, prior: np.ndarray, reason: str) -> StudyPrediction:
    """The prediction of a study that could not be read: the prior everywhere, flagged."""
    rows = [
        {
            "row_id": row_id(study_id, c, lv),
            "condition": c,
            "level": lv,
            **dict(zip(SEVERITIES, prior[t])),
            **{k: None for k in _LOCATION},
            "series_type": None,
            "spread_mm": None,
            "folds_graded": 0,
            "reason": reason,
            "flags": [FLAG_STUDY_FAILED, FLAG_PRIOR],
        }
        for t, (c, lv) in enumerate(TARGETS)
    ]
    return StudyPrediction(study_id, prior.copy(), pd.DataFrame(rows, columns=list(TARGET_COLUMNS)))


def _medoid(rows: list[pd.Series]) -> tuple[dict[str, object], float | None]:
    """Location fields of the fold point nearest (in sum) to the others, and the spread in mm."""
    found = [r for r in rows if not pd.isna(r["series_id"]) and not str(r["reason"])]
    if not found:
        return {k: None for k in _LOCATION}, None
    world = np.array([[r["world_x"], r["world_y"], r["world_z"]] for r in found], dtype=np.float64)
    dist = np.linalg.norm(world[:, None] - world[None], axis=2)
    best = int(dist.sum(axis=1).argmin())
    r = found[best]
    loc = {k: r[k] for k in _LOCATION}
    for k in ("series_id", "stack_index", "slice_index", "instance_number"):
        loc[k] = int(loc[k])
    for k in ("x", "y", "world_x", "world_y", "world_z", "confidence"):
        loc[k] = float(loc[k])
    return loc, float(dist[best].max())


def _flags(study: Study, condition: str, row: dict[str, object], graded: bool) -> list[str]:
    flags = []
    if not graded:
        flags.append(FLAG_PRIOR)
    if not study.of_type(SERIES_OF_CONDITION[condition]):
        flags.append(FLAG_MISSING_SERIES)
    if row["series_id"] is None:
        flags.append(FLAG_NOT_LOCATED)
    elif not graded:
        flags.append(FLAG_NOT_GRADED)
    if row["spread_mm"] is not None and float(row["spread_mm"]) > DISAGREE_MM:  # type: ignore[arg-type]
        flags.append(FLAG_FOLDS_DISAGREE)
    return flags


__all__ = ["Ensemble", "FoldModels", "StudyPrediction", "combine", "prior_prediction"]
