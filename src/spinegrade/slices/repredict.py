"""Redo a trained slices run's out-of-fold rows with other inference settings, into a new run.

`spinegrade slices repredict RUN --out NEW [key=value ...]` copies the run's complete folds (their
models unchanged) into `NEW`, with the config changed only in `INFERENCE_KEYS` (and the keys a
resumed run may change), re-predicts each fold's held-out studies as `slices train` does
(`train.predict_held_out`), rebuilds the OOF files and evaluates. `--folds` keeps only some folds:
their held-out studies alone are then scored. `NEW` is a run folder like any other: `evaluate`
and `predict` read it, and `slices train` with the new config resumes its missing folds.

`NEW` is written as `NEW.partial` and renamed at the end: an interrupted call leaves no half run
(call it again). The source run is only read.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from spinegrade.config import load_config, save_config, to_dict
from spinegrade.cv.folder import CONFIG_YAML, FOLDS_CSV, RESUMABLE_KEYS, RUN_JSON, diff_keys
from spinegrade.cv.train import merge_oof
from spinegrade.errors import ConfigError, DataError
from spinegrade.io import write_json
from spinegrade.slices.folder import FOLD_JSON, SlicesRun
from spinegrade.slices.grade import check_config, load_volumes
from spinegrade.slices.inputs import SLICES, open_folder
from spinegrade.slices.localize import Prepared
from spinegrade.slices.train import predict_held_out

#: Config keys that change only how trained models predict, not what was trained.
INFERENCE_KEYS = (
    "slices.tta",
    "slices.localize_zoom",
    "slices.decode",
    "slices.level_gap_mm",
    "slices.series_radius_mm",
    "slices.centroid_floor",
    "slices.grade_around_mm",
)
#: What `repredict` records in the new run's run.json.
SOURCE_KEY = "repredicted_from"


def repredict(
    run_dir: str | Path,
    out: str | Path,
    overrides: Sequence[str] = (),
    *,
    folds: Sequence[int] | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Copy `run_dir`'s complete folds (or `folds`) into `out` with the config `overrides`, redo
    their out-of-fold rows and evaluate; returns the metrics (`slices.evaluate`)."""
    source = SlicesRun(run_dir)
    source.check()
    target = Path(out)
    if target.exists():
        raise DataError(f"{target}: already exists; choose a new --out")
    cfg = load_config(source / CONFIG_YAML, list(overrides))
    changed = diff_keys(to_dict(source.config()), to_dict(cfg))
    refused = [k for k in changed if k not in INFERENCE_KEYS + RESUMABLE_KEYS]
    if refused:
        raise ConfigError(
            f"{', '.join(refused)}: changes what was trained; repredict may change only "
            f"{', '.join(INFERENCE_KEYS + RESUMABLE_KEYS)} (train a new run for the rest)"
        )
    mode = source.mode()
    check_config(cfg, mode)
    kept = source.chosen_folds(folds)
    info = source.info()
    root = data_dir if data_dir is not None else info.get("data_root")
    if root is None:
        raise DataError(f"{source.path}: no data folder recorded in {RUN_JSON}; pass --data")
    folder = open_folder(root, mode, truth=True)

    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    _copy_run(source, partial, kept)
    run = SlicesRun(partial)
    save_config(cfg, run / CONFIG_YAML)
    write_json(
        run / RUN_JSON,
        {
            **info,
            "data_root": str(Path(root).resolve()),
            SOURCE_KEY: str(source.path.resolve()),
            "overrides": list(overrides),
            "folds_kept": kept,
        },
    )
    table = run.folds()
    volumes = load_volumes(folder, cfg, progress)
    prepared = Prepared.of(volumes, cfg.localize.image_size) if mode == SLICES else None
    names: tuple[str, ...] = ()
    for k in tqdm(kept, desc="folds", unit="fold", disable=not progress):
        held = table.loc[table["fold"] == k, "study_id"].astype(int).tolist()
        names = predict_held_out(run, k, cfg, folder, held, volumes, prepared)
    merge_oof(run, names)
    partial.rename(target)

    from spinegrade.slices.evaluate import evaluate

    return evaluate(target, folder=folder)


def _copy_run(source: SlicesRun, dest: Path, folds: list[int]) -> None:
    """The run's top-level config, run.json and folds.csv, and each of `folds`' folders without
    its out-of-fold files or the loops' resume checkpoints."""
    dest.mkdir(parents=True)
    for name in (CONFIG_YAML, RUN_JSON, FOLDS_CSV):
        shutil.copy2(source / name, dest / name)
    skip = shutil.ignore_patterns("last.pt", "oof_*.csv")
    for k in folds:
        if not (source.fold_dir(k) / FOLD_JSON).is_file():
            raise DataError(f"{source.fold_dir(k)}: fold {k} is not complete")
        shutil.copytree(source.fold_dir(k), dest / source.fold_dir(k).name, ignore=skip)
