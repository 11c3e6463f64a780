"""The run folder of `spinegrade slices train`: every name in it, on `cv.folder.RunFolder`.

`RunFolder` owns what every run folder shares (config.yaml, run.json and its format check,
folds.csv, fold priors, "a fold is complete when its fold.json exists", calibration
temperatures); this module adds the slices layout's own names, and `run.json` records the mode
(`slices` or `crops`) so that `predict` and `evaluate` know which images the run was made for.
Every other module of `spinegrade.slices` takes its run-folder names from here.
"""

from __future__ import annotations

from pathlib import Path

from spinegrade.cv.folder import (
    CALIBRATION_JSON,
    CONFIG_YAML,
    FOLD_JSON,
    FOLDS_CSV,
    GRADER_DIR,
    LOCALIZER_DIR,
    METRICS_JSON,
    MODEL_PT,
    OOF_CALIBRATED,
    OOF_POINTS,
    OOF_PREDICTIONS,
    PRIOR_CSV,
    RUN_JSON,
    RunFolder,
)
from spinegrade.errors import DataError
from spinegrade.slices.inputs import MODES

#: The run.json entry naming the images a run was trained on (`slices` or `crops`).
MODE_KEY = "slices_mode"
OOF_TRUE_POINTS = "oof_predictions_true_points.csv"
FOUND_POINTS = "found_points.csv"
OOF_CALIBRATED_TRUE_POINTS = "oof_calibrated_true_points.csv"
LOCALIZATION_ERRORS = "localization_errors.csv"
REPORT_DIR = "report"
HISTORY_JSON = "history.json"
#: What `spinegrade slices predict` writes into its --out folder.
PREDICTED_POINTS, SUBMISSION = "points.csv", "submission.csv"

#: Every entry of a slices run folder and what it holds (`slices` only: the Sagittal T1 layout).
LAYOUT: tuple[tuple[str, str], ...] = (
    (CONFIG_YAML, "the resolved config the run was trained with"),
    (RUN_JSON, "format version, mode (slices or crops), data folder, studies, versions"),
    (FOLDS_CSV, "study_id, fold: the split by study, stratified on severity"),
    (f"fold_<k>/{PRIOR_CSV}", "class prior of fold k's training labels (the constant baseline)"),
    (f"fold_<k>/{LOCALIZER_DIR}/{MODEL_PT}", "slices: fold k's 5-channel heatmap localiser"),
    (f"fold_<k>/{GRADER_DIR}/{MODEL_PT}", "fold k's grader"),
    (
        f"fold_<k>/{GRADER_DIR}_<i>/{MODEL_PT}",
        "with `slices.graders` n > 1: its graders i = 1..n-1",
    ),
    (
        f"fold_<k>/{FOUND_POINTS}",
        "with `slices.found_point_graders`: fold k's localiser's points on its training slices",
    ),
    (f"fold_<k>/{OOF_POINTS}", "slices: fold k's out-of-fold predicted points"),
    (f"fold_<k>/{OOF_PREDICTIONS}", "fold k's out-of-fold probabilities (predicted points)"),
    (f"fold_<k>/{OOF_TRUE_POINTS}", "slices: the same, the grader given the TRUE points"),
    (f"fold_<k>/{FOLD_JSON}", "written last: fold k is complete (timings, seconds per epoch)"),
    (OOF_POINTS, "slices: every complete fold's out-of-fold points"),
    (OOF_PREDICTIONS, "every complete fold's out-of-fold probabilities"),
    (OOF_TRUE_POINTS, "slices: every complete fold's probabilities from the true points"),
    (CALIBRATION_JSON, "temperatures per condition group of each fold, fitted on the other folds"),
    (OOF_CALIBRATED, "the out-of-fold probabilities with those temperatures"),
    (OOF_CALIBRATED_TRUE_POINTS, "slices: the true-point probabilities with the same temperatures"),
    (LOCALIZATION_ERRORS, "slices: per out-of-fold point the error of the model and the baseline"),
    (METRICS_JSON, "model, constant prior and mean-position baseline, out of fold"),
    (f"{REPORT_DIR}/", "figures: learning curves, localisation errors, confusion, reliability"),
)


class SlicesRun(RunFolder):
    """A run folder of `spinegrade slices train`."""

    def check(self) -> None:
        """RunFolder's format check, and a mode in run.json (DataError otherwise)."""
        super().check()
        self.mode()

    def mode(self) -> str:
        """`slices` or `crops`: the images the run was trained on."""
        mode = self.info().get(MODE_KEY)
        if mode not in MODES:
            raise DataError(
                f"{self.path}: not a run folder of `spinegrade slices train` "
                f"({RUN_JSON} has no {MODE_KEY})"
            )
        return str(mode)

    def grader_models(self, k: int, n: int) -> list[Path]:
        """Fold `k`'s `n` graders: `fold_<k>/grader/model.pt`, then `grader_<i>/model.pt`."""
        first = self.grader_model(k)
        return [first] + [
            first.parent.with_name(f"{first.parent.name}_{i}") / first.name for i in range(1, n)
        ]

    def localizer_model(self, k: int) -> Path:
        """`fold_<k>/localizer/model.pt`."""
        return self.localizer_dir(k) / MODEL_PT

    def fold_file(self, k: int, name: str) -> Path:
        """`fold_<k>/<name>`."""
        return self.fold_dir(k) / name

    @property
    def report_dir(self) -> Path:
        """`RUN/report`."""
        return self.path / REPORT_DIR
