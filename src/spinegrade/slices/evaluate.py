"""Metrics and figures of a slices run, recomputed from its saved out-of-fold files.

Nothing is retrained or re-predicted. The grader's probabilities are calibrated with temperatures
cross-fitted over folds (`grade.calibrate.cross_fit` on the predicted-point rows: fold k's rows
get temperatures fitted on the other folds; the true-point rows get the same temperatures).
Comparators, all on exactly the out-of-fold studies, fitted on each fold's training studies:

- the constant prior: `fold_<k>/prior.csv` (the training labels' class prior);
- the mean-position baseline (slices): each level's mean point, in normalised image coordinates,
  over the training folds' true points (`slices.localize.MeanPosition`).

Figures (what the metric terms are made of): the foraminal term (slices) or the subarticular and
canal terms (crops), each a weighted log loss 1/2/4 over the group's rows, left and right
together; accuracy, macro F1 and one-vs-rest AUC per class; localisation errors in PNG pixels
(shares within `WITHIN_PX`, median, 90th percentile, level swaps: a point nearer another level's
true point of its study and side than its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from spinegrade.constants import (
    CONDITION_GROUPS,
    GROUP_OF_CONDITION,
    SEVERITIES,
    TARGETS,
    parse_row_id,
)
from spinegrade.data.tables import labels_long
from spinegrade.errors import DataError
from spinegrade.grade.calibrate import calibrate_rows, cross_fit
from spinegrade.io import write_json, write_with
from spinegrade.metrics import detailed_metrics, normalise_probabilities, read_submission, score
from spinegrade.report.evaluation_figures import (
    confusion_grid,
    error_distributions,
    reliability_diagram,
)
from spinegrade.report.training_figures import learning_curves
from spinegrade.slices.folder import (
    CALIBRATION_JSON,
    GRADER_DIR,
    HISTORY_JSON,
    LOCALIZATION_ERRORS,
    LOCALIZER_DIR,
    METRICS_JSON,
    OOF_CALIBRATED,
    OOF_CALIBRATED_TRUE_POINTS,
    OOF_POINTS,
    OOF_PREDICTIONS,
    OOF_TRUE_POINTS,
    SlicesRun,
)
from spinegrade.slices.inputs import (
    SLICES,
    TARGETS_OF_MODE,
    Folder,
    SliceFolder,
    image_shape,
    open_folder,
)
from spinegrade.slices.localize import MeanPosition

#: Localisation thresholds reported (PNG pixels).
WITHIN_PX = (3, 5, 10)
MODEL, BASELINE = "model", "baseline"


def groups_of(mode: str) -> tuple[str, ...]:
    """The condition groups a mode grades, in `CONDITION_GROUPS` order."""
    present = {GROUP_OF_CONDITION[c] for c, _ in TARGETS_OF_MODE[mode]}
    return tuple(g for g in CONDITION_GROUPS if g in present)


def evaluate(
    run_dir: str | Path, *, data_dir: str | Path | None = None, folder: Folder | None = None
) -> dict[str, Any]:
    """Recompute calibration, `metrics.json`, `localization_errors.csv` and `report/` of a slices
    run; return the metrics. The truth is read from `folder`, else `data_dir`, else the data
    folder recorded in run.json."""
    run = SlicesRun(run_dir)
    run.check()
    mode = run.mode()
    done = run.completed_folds()
    if not done or not (run / OOF_PREDICTIONS).is_file():
        raise DataError(
            f"{run.path}: no complete fold yet (no fold_*/fold.json and {OOF_PREDICTIONS})"
        )
    if folder is None:
        root = data_dir if data_dir is not None else run.info().get("data_root")
        if root is None:
            raise DataError(f"{run.path}: no data folder recorded in run.json; pass --data")
        folder = open_folder(root, mode, truth=True)
    raw = read_submission(run / OOF_PREDICTIONS)
    studies = sorted({parse_row_id(r)[0] for r in raw["row_id"]})
    labels = folder.labels()
    labels = labels[labels["study_id"].isin(studies)].reset_index(drop=True)
    if len(labels) != len(studies):
        raise DataError(
            f"{run.path}: {len(studies) - len(labels)} out-of-fold studies are not in {folder.root}"
        )
    fold_table = run.folds()
    fold_of = dict(zip(fold_table["study_id"].astype(int), fold_table["fold"].astype(int)))
    oof, calibration = cross_fit(raw, labels_long(labels), fold_of)
    write_json(run / CALIBRATION_JSON, calibration)
    write_with(run / OOF_CALIBRATED, lambda t: oof.to_csv(t, index=False))
    metrics: dict[str, Any] = {
        "mode": mode,
        "studies": len(studies),
        "folds": done,
        "folds_total": int(fold_table["fold"].max()) + 1,
        "model": detailed_metrics(labels, oof),
        "model_uncalibrated": score(labels, raw).to_dict(),
        "prior": detailed_metrics(labels, prior_rows(run, raw, fold_of)),
        "temperatures": calibration["folds"],
    }
    if mode == SLICES:
        assert isinstance(folder, SliceFolder)
        true = calibrate_by_fold(read_submission(run / OOF_TRUE_POINTS), calibration, fold_of)
        write_with(run / OOF_CALIBRATED_TRUE_POINTS, lambda t: true.to_csv(t, index=False))
        metrics["model_true_points"] = detailed_metrics(labels, true)
        errors = localization_errors(run, folder, fold_table, done)
        write_with(run / LOCALIZATION_ERRORS, lambda t: errors.to_csv(t, index=False))
        metrics["localization"] = {
            who: summarize_errors(errors[errors["who"] == who]) for who in (MODEL, BASELINE)
        }
    else:
        errors = None
    write_json(run / METRICS_JSON, metrics)
    write_figures(run, metrics, labels, {"uncalibrated": raw, "calibrated": oof}, errors)
    return metrics


def prior_rows(run: SlicesRun, rows: pd.DataFrame, fold_of: dict[int, int]) -> pd.DataFrame:
    """For each of `rows`' row ids, its fold's training prior (submission rows)."""
    index = {t: i for i, t in enumerate(TARGETS)}
    priors: dict[int, np.ndarray] = {}
    probs = []
    for rid in rows["row_id"]:
        study, condition, level = parse_row_id(rid)
        k = fold_of[study]
        if k not in priors:
            priors[k] = run.prior(k)
        probs.append(priors[k][index[(condition, level)]])
    values = np.array(probs).reshape(-1, len(SEVERITIES))
    return pd.DataFrame(
        {"row_id": rows["row_id"], **{s: values[:, i] for i, s in enumerate(SEVERITIES)}}
    )


def calibrate_by_fold(
    rows: pd.DataFrame, calibration: dict[str, Any], fold_of: dict[int, int]
) -> pd.DataFrame:
    """`rows` (submission) with each fold's temperatures of a `cross_fit` record applied."""
    parsed = [parse_row_id(r) for r in rows["row_id"]]
    table = rows.assign(condition=[p[1] for p in parsed], fold=[fold_of[p[0]] for p in parsed])
    parts = [
        calibrate_rows(part, calibration["folds"].get(str(k), {}))
        for k, part in table.groupby("fold", sort=False)
    ]
    return pd.concat(parts).loc[table.index, list(rows.columns)]


def localization_errors(
    run: SlicesRun, folder: SliceFolder, fold_table: pd.DataFrame, done: list[int]
) -> pd.DataFrame:
    """Per out-of-fold target with a true point: `study_id, condition, level, fold, who,
    error_px, swap`, for the model (`oof_points.csv`) and the mean-position baseline (fitted on
    the other folds' true points)."""
    keys = ["study_id", "condition", "level"]
    truth = _with_shapes(folder, folder.points.dropna(subset=["x", "y"]))
    predicted = pd.read_csv(run / OOF_POINTS)
    frames = [predicted.assign(who=MODEL)]
    for k in done:
        held = set(fold_table.loc[fold_table["fold"] == k, "study_id"].astype(int))
        train = set(fold_table["study_id"].astype(int)) - held
        baseline = MeanPosition.fit(truth[truth["study_id"].isin(train)])
        asked = predicted[predicted["fold"] == k][[*keys, "fold"]].merge(
            truth[[*keys, "rows", "cols"]], on=keys
        )
        frames.append(baseline.locate(asked).assign(who=BASELINE))
    out = []
    for frame in frames:
        merged = frame[[*keys, "fold", "who", "x", "y"]].merge(
            truth[[*keys, "x", "y"]], on=keys, suffixes=("", "_true")
        )
        merged["error_px"] = np.hypot(
            merged["x"] - merged["x_true"], merged["y"] - merged["y_true"]
        )
        merged["swap"] = _swaps(merged, truth)
        out.append(merged[[*keys, "fold", "who", "error_px", "swap"]])
    return pd.concat(out, ignore_index=True)


def summarize_errors(errors: pd.DataFrame) -> dict[str, Any]:
    """`points`, `within_px` {threshold: share}, `median_px`, `p90_px`, `swaps` of error rows."""
    finite = np.isfinite(errors["error_px"].to_numpy(dtype=float))
    errors = errors[finite]
    e = errors["error_px"].to_numpy(dtype=float)
    if not len(e):
        return {"points": 0, "within_px": {}, "median_px": None, "p90_px": None, "swaps": 0}
    return {
        "points": int(len(e)),
        "within_px": {str(t): float(np.mean(e <= t)) for t in WITHIN_PX},
        "median_px": float(np.median(e)),
        "p90_px": float(np.percentile(e, 90)),
        "swaps": int(errors["swap"].astype(bool).sum()),
    }


def metrics_table(metrics: dict[str, Any]) -> Table:
    """One table: the model (and, for slices, the model given true points), the constant prior
    and the mean-position baseline, side by side."""
    slices = metrics["mode"] == SLICES
    columns = ["model", *(["model, true points"] if slices else []), "constant prior"]
    who = ["model", *(["model_true_points"] if slices else []), "prior"]
    if slices:
        columns.append("mean position")
    table = Table(
        "figure",
        *columns,
        title=f"{metrics['mode']}: out of fold, {metrics['studies']} studies, "
        f"folds {metrics['folds']}",
    )
    blank = [""] * (len(columns) - len(who))
    for group in groups_of(metrics["mode"]):
        loss = [_fmt(metrics[w]["score"]["terms"][group]) for w in who]
        n = metrics["model"]["score"]["n_rows"][group]
        table.add_row(
            f"[bold]{group} log loss (1/2/4, {n} rows)[/]", *(f"[bold]{v}[/]" for v in loss), *blank
        )
        for key, name in (("accuracy", "accuracy"), ("macro_f1", "macro F1")):
            table.add_row(
                f"  {group} {name}", *(_fmt(metrics[w]["groups"][group][key]) for w in who), *blank
            )
        for s in SEVERITIES:
            table.add_row(
                f"  {group} AUC {s}",
                *(_fmt(metrics[w]["groups"][group]["auc"][s]) for w in who),
                *blank,
            )
    if not slices:
        table.add_row(
            "any severe spinal",
            *(_fmt(metrics[w]["score"]["terms"]["any_severe_spinal"]) for w in who),
        )
        return table
    loc = metrics["localization"]
    empty = [""] * (len(columns) - 2)
    for t in WITHIN_PX:
        table.add_row(
            f"points within {t} px",
            _pct(loc[MODEL]["within_px"].get(str(t))),
            *empty,
            _pct(loc[BASELINE]["within_px"].get(str(t))),
        )
    for key, name in (("median_px", "median error (px)"), ("p90_px", "90th percentile error (px)")):
        table.add_row(name, _fmt(loc[MODEL][key], ".2f"), *empty, _fmt(loc[BASELINE][key], ".2f"))
    table.add_row(
        "level swaps",
        f"{loc[MODEL]['swaps']} of {loc[MODEL]['points']}",
        *empty,
        f"{loc[BASELINE]['swaps']} of {loc[BASELINE]['points']}",
    )
    return table


def write_figures(
    run: SlicesRun,
    metrics: dict[str, Any],
    labels: pd.DataFrame,
    predictions: dict[str, pd.DataFrame],
    errors: pd.DataFrame | None,
) -> list[Path]:
    """`report/`: learning curves, localisation errors (slices), confusion matrices and a
    reliability diagram per condition group."""
    out = run.report_dir
    slices = metrics["mode"] == SLICES
    histories = ((("localiser", f"{LOCALIZER_DIR}/{HISTORY_JSON}"),) if slices else ()) + (
        ("grader", f"{GRADER_DIR}/{HISTORY_JSON}"),
    )
    paths = [learning_curves(run.path, metrics["folds"], out / "learning_curves.png", histories)]
    if errors is not None:
        paths.append(
            error_distributions(
                {
                    who: errors.loc[errors["who"] == who, "error_px"].to_numpy()
                    for who in (MODEL, BASELINE)
                },
                out / "localization_errors.png",
                unit="PNG px",
                marks=WITHIN_PX,
            )
        )
    who = {"predicted points": "model", **({"true points": "model_true_points"} if slices else {})}
    truth = labels_long(labels)
    truth = truth[truth["label"] >= 0]
    for group in groups_of(metrics["mode"]):
        paths.append(
            confusion_grid(
                {
                    f"{group}, {name}": np.array(metrics[key]["groups"][group]["confusion"])
                    for name, key in who.items()
                },
                out / f"confusion_{group}.png",
            )
        )
        mine = truth[truth["condition"].isin(CONDITION_GROUPS[group])]
        curves = {}
        for name, rows in predictions.items():
            aligned = rows.set_index("row_id").loc[mine["row_id"], list(SEVERITIES)].to_numpy()
            curves[name] = (mine["label"].to_numpy(), normalise_probabilities(aligned))
        paths.append(reliability_diagram(curves, out / f"reliability_{group}.png"))
    return paths


def _with_shapes(folder: SliceFolder, points: pd.DataFrame) -> pd.DataFrame:
    """`points` with the `rows`, `cols` of their slice's PNG (read from the headers)."""
    s = folder.slices
    files = s.set_index(["study_id", "series_id", "instance_number"])["file"]
    file = files.loc[
        list(zip(points["study_id"], points["series_id"], points["instance_number"]))
    ].to_numpy()
    shapes = {f: image_shape(folder.root / f) for f in set(file)}
    return points.assign(rows=[shapes[f][0] for f in file], cols=[shapes[f][1] for f in file])


def _swaps(merged: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """Per row of `merged` (a predicted `x, y` with its `study_id, condition, level`): is the
    nearest true point of the same study and side of another level?"""
    out = np.zeros(len(merged), dtype=bool)
    groups = dict(tuple(truth.groupby(["study_id", "condition"])))
    for (sid, cond), idx in merged.groupby(["study_id", "condition"]).indices.items():
        same = groups[(sid, cond)]
        d = np.hypot(
            merged["x"].to_numpy()[idx, None] - same["x"].to_numpy()[None],
            merged["y"].to_numpy()[idx, None] - same["y"].to_numpy()[None],
        )
        nearest = same["level"].to_numpy()[d.argmin(axis=1)]
        out[idx] = nearest != merged["level"].to_numpy()[idx]
    return out


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
