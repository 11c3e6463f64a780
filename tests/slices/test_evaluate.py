"""`slices evaluate`: metrics beside the constant prior and the mean-position baseline, recomputed
from the saved out-of-fold files, the figures, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from spinegrade.cli import app
from spinegrade.constants import SEVERITIES, SEVERITY_WEIGHTS
from spinegrade.slices.evaluate import evaluate, metrics_table

runner = CliRunner()


def _text(table) -> str:  # type: ignore[no-untyped-def]
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_slices_metrics_compare_the_model_with_both_baselines(slices_run: dict) -> None:
    run = slices_run["run"]
    metrics = evaluate(run)
    assert metrics == json.loads((run / "metrics.json").read_text())
    assert metrics == slices_run["summary"].metrics  # recomputed from the files: the same
    for who in ("model", "model_true_points", "prior"):
        assert metrics[who]["score"]["n_rows"]["foraminal"] == 60
        assert metrics[who]["score"]["terms"]["spinal"] is None  # only foraminal targets
    loc = metrics["localization"]
    assert loc["model"]["points"] == loc["baseline"]["points"] == 60
    # the generated studies' spines sit within +-4 px of one height, half the 12 px between two
    # levels: the mean position is near, and never nearer another level's point
    assert loc["baseline"]["p90_px"] < 12 and loc["baseline"]["swaps"] == 0
    errors = pd.read_csv(run / "localization_errors.csv")
    assert set(errors.who) == {"model", "baseline"} and len(errors) == 120
    text = _text(metrics_table(metrics))
    for row in ("foraminal log loss", "AUC severe", "points within 5 px", "level swaps"):
        assert row in text
    assert "mean position" in text and "constant prior" in text and "true points" in text
    for name in ("learning_curves", "localization_errors", "confusion_foraminal"):
        assert (run / "report" / f"{name}.png").stat().st_size > 1000
    assert (run / "report" / "reliability_foraminal.png").is_file()


def test_the_prior_column_is_each_folds_training_prior(slices_run: dict) -> None:
    run = slices_run["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    folds = pd.read_csv(run / "folds.csv")
    points = pd.read_csv(slices_run["data"] / "points.csv")
    losses, weights = [], []
    for k in (0, 1):
        prior = pd.read_csv(run / f"fold_{k}" / "prior.csv").set_index(["condition", "level"])
        held = points[points.study_id.isin(folds.study_id[folds.fold == k])]
        for r in held.itertuples():
            y = ["Normal/Mild", "Moderate", "Severe"].index(r.severity)
            p = prior.loc[(r.condition, r.level), list(SEVERITIES)].to_numpy(float)
            losses.append(-SEVERITY_WEIGHTS[y] * np.log(p[y] / p.sum()))
            weights.append(SEVERITY_WEIGHTS[y])
    expected = sum(losses) / sum(weights)
    assert metrics["prior"]["score"]["terms"]["foraminal"] == pytest.approx(expected, rel=1e-9)


def test_crops_metrics_hold_the_subarticular_and_canal_terms(crops_run: dict) -> None:
    metrics = crops_run["summary"].metrics  # what `train` evaluated
    terms = metrics["model"]["score"]["terms"]
    assert terms["foraminal"] is None and terms["subarticular"] > 0 and terms["spinal"] > 0
    assert "localization" not in metrics
    text = _text(metrics_table(metrics))
    assert "subarticular log loss" in text and "spinal AUC" in text and "any severe" in text
    assert "mean position" not in text


def test_the_command_line_trains_evaluates_and_predicts(crops_run: dict, tmp_path: Path) -> None:
    out = runner.invoke(app, ["slices", "evaluate", str(crops_run["run"])])
    assert out.exit_code == 0, out.output
    assert "subarticular log loss" in out.output
    out = runner.invoke(
        app,
        ["slices", "predict", str(crops_run["run"]), str(crops_run["data"]), "-o", str(tmp_path)],
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "submission.csv").is_file()


def test_a_missing_table_is_one_line_and_exit_status_2(slices_folder: Path, tmp_path: Path):
    (slices_folder / "slices.csv").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "spinegrade", "slices", "train", str(slices_folder), "--mode",
         "slices", "-o", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "slices.csv: file not found" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
