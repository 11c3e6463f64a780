"""The run folder: every name in it, its format version, and what a complete fold is.

A run folder is how a trained model travels: `spinegrade train` writes it, `evaluate`, `predict`
and `export` read it. It is data, never code: configs are YAML read into typed dataclasses,
tables are CSV, checkpoints are tensors and plain metadata loaded with `weights_only=True`.

`LAYOUT` below is the contract (the README's list is tested against it). A fold is *complete*
when its `fold.json` exists: that file is written last, after the fold's models, prior and
out-of-fold files, each atomically. `run.json` carries `FORMAT_VERSION`; a folder of another
version is refused with one line saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from spinegrade import __version__
from spinegrade.config import Config, from_dict, load_config, save_config, to_dict
from spinegrade.constants import CONDITION_GROUPS, SEVERITIES, TARGETS
from spinegrade.errors import ConfigError, DataError, SpinegradeError
from spinegrade.io import write_json, write_with
from spinegrade.localize.predict import AXIAL_DIR, SAGITTAL_DIR
from spinegrade.training.logs import TB_DIR
from spinegrade.training.selection import SELECTION_JSON

#: Version of the layout below. 1: spinegrade 0.1 (one prior.csv per run, pickled checkpoints).
FORMAT_VERSION = 2

CONFIG_YAML = "config.yaml"
RUN_JSON = "run.json"
FOLDS_CSV = "folds.csv"
OOF_POINTS = "oof_points.csv"
OOF_PREDICTIONS = "oof_predictions.csv"
OOF_CALIBRATED = "oof_calibrated.csv"
CALIBRATION_JSON = "calibration.json"
METRICS_JSON = "metrics.json"
LOCALIZATION_JSON = "localization.json"
FIGURES_DIR = "figures"
CACHE_DIR = "cache"
ONNX_DIR = "onnx"
FOLD_JSON = "fold.json"
PRIOR_CSV = "prior.csv"
LOCALIZATION_ERRORS = "localization_errors.csv"
LOCALIZER_DIR = "localizer"
GRADER_DIR = "grader"
MODEL_PT = "model.pt"

#: Every entry of a run folder and what it holds, in the order the README lists them.
LAYOUT: tuple[tuple[str, str], ...] = (
    (CONFIG_YAML, "the resolved config the run was trained with"),
    (RUN_JSON, "format version, data root, studies, versions of spinegrade, torch and Python"),
    (FOLDS_CSV, "study_id, fold: the split by study"),
    (f"fold_<k>/{PRIOR_CSV}", "class prior of fold k's training labels (fills ungraded targets)"),
    (f"fold_<k>/{LOCALIZER_DIR}/", "fold k's localiser (sagittal/ and axial/ heatmap networks)"),
    (f"fold_<k>/{GRADER_DIR}/{MODEL_PT}", "fold k's grader"),
    (f"fold_<k>/{OOF_POINTS}", "fold k's out-of-fold located points"),
    (f"fold_<k>/{OOF_PREDICTIONS}", "fold k's out-of-fold probabilities (uncalibrated)"),
    (f"fold_<k>/{LOCALIZATION_ERRORS}", "fold k's localisation errors, model and baseline"),
    (
        f"fold_<k>/<network>/{SELECTION_JSON}",
        "with early stopping: the network's inner studies and chosen epoch",
    ),
    (f"fold_<k>/<network>/{TB_DIR}/", "with optim.tensorboard: the network's TensorBoard events"),
    (f"fold_<k>/{FOLD_JSON}", "written last: fold k is complete (timings, studies, selection)"),
    (OOF_POINTS, "every complete fold's out-of-fold points"),
    (OOF_PREDICTIONS, "every complete fold's out-of-fold probabilities"),
    (CALIBRATION_JSON, "temperatures per condition group of each fold, fitted on the other folds"),
    (OOF_CALIBRATED, "the out-of-fold probabilities with those temperatures"),
    (METRICS_JSON, "the challenge score and per-condition figures, out of fold"),
    (LOCALIZATION_JSON, "localisation figures out of fold, model and baseline"),
    (f"{FIGURES_DIR}/", "learning curves, confusion matrices, ROC, localisation"),
    (f"{CACHE_DIR}/", "the studies read once (npz), unless data.cache_dir says elsewhere"),
    (f"{ONNX_DIR}/", "`spinegrade export`'s default: the networks as ONNX, and their manifest"),
)

#: Config keys that may change between a run and its resumption (they do not change results).
RESUMABLE_KEYS = (
    "name",
    "device",
    "data.num_workers",
    "data.cache_dir",
    "localize.optim.tensorboard",
    "grade.optim.tensorboard",
)


class RunFolder:
    """A run folder on disk: names, the format check, folds, priors and temperatures."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # --- names ------------------------------------------------------------------------------

    def fold_dir(self, k: int) -> Path:
        """`RUN/fold_<k>`."""
        return self.path / f"fold_{int(k)}"

    def localizer_dir(self, k: int) -> Path:
        return self.fold_dir(k) / LOCALIZER_DIR

    def grader_model(self, k: int) -> Path:
        return self.fold_dir(k) / GRADER_DIR / MODEL_PT

    def onnx_dir(self) -> Path:
        """`RUN/onnx`: where `spinegrade export` writes, and `--engine onnx` reads, by default."""
        return self.path / ONNX_DIR

    def networks(self, k: int) -> dict[str, Path]:
        """Fold k's network folders (each with its `history.json`) by their path in the fold."""
        names = (f"{LOCALIZER_DIR}/{SAGITTAL_DIR}", f"{LOCALIZER_DIR}/{AXIAL_DIR}", GRADER_DIR)
        return {name: self.fold_dir(k) / name for name in names}

    def cache_dir(self, cfg: Config) -> Path:
        """The study cache: `cfg.data.cache_dir`, else `RUN/cache`."""
        return Path(cfg.data.cache_dir) if cfg.data.cache_dir else self.path / CACHE_DIR

    # --- what is there ----------------------------------------------------------------------

    def completed_folds(self) -> list[int]:
        """Folds whose `fold.json` (written last) exists, in order."""
        found = (
            re.fullmatch(r"fold_(\d+)", p.parent.name)
            for p in self.path.glob(f"fold_*/{FOLD_JSON}")
        )
        return sorted(int(m.group(1)) for m in found if m)

    def chosen_folds(self, folds: Sequence[int] | None = None) -> list[int]:
        """The complete folds, or those of `folds` (DataError if one is not complete), in order."""
        done = self.completed_folds()
        if folds is not None:
            unknown = sorted(set(folds) - set(done))
            if unknown:
                raise DataError(f"{self.path}: no complete fold(s) {unknown}; complete: {done}")
            done = sorted(set(folds))
        if not done:
            raise DataError(f"{self.path}: no complete fold yet (no fold_<k>/{FOLD_JSON})")
        return done

    def check(self) -> None:
        """Raise one-line DataError unless this is a run folder of `FORMAT_VERSION`."""
        if not (self.path / CONFIG_YAML).is_file():
            raise DataError(
                f"{self.path}: not a run folder written by `spinegrade train` (no {CONFIG_YAML})"
            )
        version = self.info().get("format", 1)
        if version != FORMAT_VERSION:
            raise DataError(
                f"{self.path}: run folder format {version}, but this spinegrade "
                f"({__version__}) reads format {FORMAT_VERSION}; train it again with "
                f"`spinegrade train` (same data and config) into a new --out"
            )

    def info(self) -> dict[str, Any]:
        """`run.json`, or {} when absent."""
        path = self.path / RUN_JSON
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable ({exc})") from None

    def config(self) -> Config:
        """The run's resolved config."""
        return load_config(self.path / CONFIG_YAML)

    def folds(self) -> pd.DataFrame:
        """`folds.csv`: `study_id, fold`."""
        path = self.path / FOLDS_CSV
        if not path.is_file():
            raise DataError(
                f"{path}: folds not found (not a run folder written by `spinegrade train`)"
            )
        return pd.read_csv(path)

    def prior(self, k: int) -> np.ndarray:
        """Fold k's `prior.csv` as `(25, 3)` probabilities in `TARGETS` order."""
        return read_prior(self.fold_dir(k) / PRIOR_CSV)

    def ensemble_prior(self, folds: Sequence[int] | None = None) -> np.ndarray:
        """What an ensemble of `folds` (default: the complete ones) predicts for a target it
        cannot grade: the mean of those folds' priors, `(25, 3)`."""
        folds = self.completed_folds() if folds is None else list(folds)
        if not folds:
            raise DataError(f"{self.path}: no complete fold yet (no fold_<k>/{FOLD_JSON})")
        return np.mean([self.prior(k) for k in folds], axis=0)

    def temperatures(self, k: int) -> dict[str, float]:
        """Fold k's temperatures per condition group (`calibration.json`); T = 1 when absent."""
        path = self.path / CALIBRATION_JSON
        ones = {g: 1.0 for g in CONDITION_GROUPS}
        if not path.is_file():
            return ones
        fitted = json.loads(path.read_text(encoding="utf-8")).get("folds", {}).get(str(int(k)))
        return {g: float(t) for g, t in fitted.items()} if fitted else ones

    def fingerprint(self, folds: Sequence[int]) -> str:
        """SHA-256 of what predicting with `folds` depends on: config.yaml, calibration.json (when
        present) and each fold's prior and checkpoints, by relative path and content."""
        names = [CONFIG_YAML, CALIBRATION_JSON]
        for k in sorted(folds):
            fold = self.fold_dir(k)
            names.append(str((fold / PRIOR_CSV).relative_to(self.path)))
            names += sorted(str(p.relative_to(self.path)) for p in fold.rglob(MODEL_PT))
        digest = hashlib.sha256()
        for name in names:
            if (self.path / name).is_file():
                digest.update(f"{name}\n".encode())
                with open(self.path / name, "rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        digest.update(block)
        return digest.hexdigest()

    # --- writing ----------------------------------------------------------------------------

    def start(
        self,
        cfg: Config,
        fold_table: pd.DataFrame,
        data_root: Path,
        wanted: Sequence[int],
        world_size: int,
        *,
        left_out: Sequence[int] = (),
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Write config.yaml, folds.csv and run.json (with `extra`'s entries), after checking a
        resumed folder matches.

        `left_out`: labelled studies not trained on because they have no images (run.json)."""
        self.check_config(cfg)
        self.check_folds(fold_table)
        save_config(cfg, self.path / CONFIG_YAML)
        write_with(self.path / FOLDS_CSV, lambda tmp: fold_table.to_csv(tmp, index=False))
        write_json(
            self.path / RUN_JSON,
            {
                "format": FORMAT_VERSION,
                "data_root": str(Path(data_root).resolve()),
                "studies": len(fold_table),
                "studies_left_out_without_images": [int(s) for s in left_out],
                "folds_asked": list(wanted),
                "world_size": world_size,
                "spinegrade": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                **(extra or {}),
            },
        )

    def check_config(self, cfg: Config) -> None:
        """Refuse to resume a folder of another format or config (in a key that changes results)."""
        if (self.path / CONFIG_YAML).is_file():
            self.check()
            try:
                old = to_dict(
                    from_dict(
                        Config,
                        yaml.safe_load((self.path / CONFIG_YAML).read_text(encoding="utf-8")) or {},
                    )
                )
            except (yaml.YAMLError, SpinegradeError) as exc:
                raise ConfigError(
                    f"{self.path / CONFIG_YAML}: unreadable config of an earlier run ({exc})"
                ) from None
            diff = [k for k in diff_keys(old, to_dict(cfg)) if k not in RESUMABLE_KEYS]
            if diff:
                raise ConfigError(
                    f"{self.path / CONFIG_YAML}: this run folder was trained with "
                    f"another config (differs in {', '.join(diff[:5])}); use the "
                    f"same config or a new --out"
                )

    def check_folds(self, fold_table: pd.DataFrame) -> None:
        """Refuse to resume a folder whose `folds.csv` holds other studies or folds."""
        path = self.path / FOLDS_CSV
        if path.is_file():
            old_folds = pd.read_csv(path)
            if list(old_folds.columns) != ["study_id", "fold"] or not np.array_equal(
                old_folds.to_numpy(), fold_table.to_numpy()
            ):
                raise DataError(
                    f"{path}: the studies or their folds differ from this data "
                    f"({len(old_folds)} vs {len(fold_table)} studies); use a new --out"
                )


def read_prior(path: str | Path) -> np.ndarray:
    """A `prior.csv` (condition, level, the 3 severities) as `(25, 3)` in `TARGETS` order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prior not found (an incomplete run folder?)")
    table = pd.read_csv(path).set_index(["condition", "level"])
    try:
        return table.loc[list(TARGETS), list(SEVERITIES)].to_numpy(dtype=np.float64)
    except KeyError as exc:
        raise DataError(f"{path}: missing target or column {exc}") from None


def diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += diff_keys(a[key], b[key], name + ".")
        elif a.get(key) != b.get(key):
            out.append(name)
    return out
