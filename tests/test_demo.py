"""`spinegrade demo` smoke test: the whole pipeline on a handful of tiny synthetic studies."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from spinegrade.cli import app
from spinegrade.config import load_config
from spinegrade.demo import PREDICT, QUICK, TRAIN, resolve_plan


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "demo"
    args = [
        "demo",
        "--out",
        str(out),
        "--studies",
        "6",
        "--test-studies",
        "2",
        "--config",
        "tiny",
        "--folds",
        "2",
        "--workers",
        "0",
        "localize.optim.epochs=1",
        "grade.optim.epochs=2",
    ]
    runner = CliRunner()
    first = runner.invoke(app, args, terminal_width=200)
    assert first.exit_code == 0, first.output
    for text in (
        "held-out score",
        "submission:",
        "reports:",
        "metrics:",
        "figures:",
        "oracle",
        "prior",
    ):
        assert text in first.output

    summary = json.loads((out / "demo.json").read_text())
    test_ids = pd.read_csv(out / "test_data" / "train.csv").study_id.tolist()
    sub = pd.read_csv(out / "predictions" / "submission.csv")
    assert len(sub) == 25 * len(test_ids) == 25 * 2
    assert set(test_ids).isdisjoint(pd.read_csv(out / "data" / "train.csv").study_id)
    held = summary["held_out"]
    assert held["oracle"]["score"] < held["prior"]["score"]  # the set is informative
    assert 0 < held["model"]["score"] < 5
    assert (out / "run" / "metrics.json").is_file() and (
        out / "predictions" / "index.html"
    ).is_file()
    assert len(list((out / "predictions" / "studies").glob("*/report.html"))) == 2
    assert list((out / "predictions" / "studies").glob("*/cam/*.png"))  # the demo shows maps

    stamp = os.stat(out / "predictions" / "submission.csv").st_mtime_ns
    second = runner.invoke(
        app, args, terminal_width=200
    )  # resumes: nothing regenerated or retrained
    assert second.exit_code == 0, second.output
    assert os.stat(out / "predictions" / "submission.csv").st_mtime_ns == stamp
    again = json.loads((out / "demo.json").read_text())
    assert again["held_out"] == held
    assert again["seconds"]["train and evaluate"] < summary["seconds"]["train and evaluate"]


def test_thorough_plan_is_the_demo_of_version_0_1() -> None:
    """`--thorough` trains what the demo trained before the quick default: 80 studies, 10 held out,
    2 folds of the `demo` config."""
    thorough = resolve_plan(thorough=True)
    assert (thorough.studies, thorough.test_studies, thorough.folds, thorough.config) == (
        80,
        10,
        2,
        "demo",
    )
    quick = resolve_plan()
    assert quick.config == "quick" and quick.studies < thorough.studies
    assert load_config("quick").localize.optim.epochs < load_config("demo").localize.optim.epochs


def test_plan_takes_the_sizes_asked_and_scales_its_expected_times() -> None:
    plan = resolve_plan(studies=QUICK.studies * 2, config="tiny")
    assert (plan.studies, plan.test_studies, plan.config) == (2 * QUICK.studies, 10, "tiny")
    assert plan.expected(TRAIN) == pytest.approx(2 * QUICK.expected_s[TRAIN])
    assert plan.expected(PREDICT) == pytest.approx(QUICK.expected_s[PREDICT])
