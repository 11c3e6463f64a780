"""`spinegrade compare`: two DICOM run folders (metrics.json as `evaluate` writes it) and a run of
another kind that has only some terms, side by side, with '-' where a run lacks a figure."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from spinegrade.cli import main
from spinegrade.constants import (
    CONDITION_LABELS,
    CONDITIONS,
    SCORE_TERMS,
    SEVERITIES,
    TARGET_COLUMNS,
    TARGETS,
    row_id,
)
from spinegrade.cv.compare import compare_runs, comparison_table
from spinegrade.metrics import constant_prior_submission, detailed_metrics, score


def _labels(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    codes = rng.choice(3, size=(n, len(TARGET_COLUMNS)), p=[0.7, 0.2, 0.1])
    labels = pd.DataFrame(np.asarray(SEVERITIES, dtype=object)[codes], columns=list(TARGET_COLUMNS))
    labels.insert(0, "study_id", 500 + np.arange(n))
    return labels


def _submission(labels: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [row_id(s, c, lv) for s in labels.study_id for c, lv in TARGETS]
    probs = rng.dirichlet([4, 1, 1], size=len(rows))
    return pd.DataFrame({"row_id": rows, **{s: probs[:, i] for i, s in enumerate(SEVERITIES)}})


def _dicom_run(folder: Path, labels: pd.DataFrame, seed: int) -> dict:
    """A run folder whose metrics.json has the layout of `spinegrade.cv.evaluate`."""
    sub = _submission(labels, seed)
    metrics = {
        "studies": len(labels),
        "model": detailed_metrics(labels, sub),
        "model_uncalibrated": score(labels, _submission(labels, seed + 1)).to_dict(),
        "prior": score(labels, constant_prior_submission(labels)).to_dict(),
        "oracle": None,
    }
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return metrics


@pytest.fixture
def runs(tmp_path: Path) -> tuple[list[Path], list[dict]]:
    labels = _labels(6)
    a = _dicom_run(tmp_path / "run_a", labels, seed=1)
    b = _dicom_run(tmp_path / "run_b", labels, seed=2)
    slices = {"studies": 885, "model": {"score": 0.6125, "terms": {"foraminal": 0.6125}}}
    (tmp_path / "slices_run").mkdir()
    (tmp_path / "slices_run" / "metrics.json").write_text(json.dumps(slices))
    return [tmp_path / "run_a", tmp_path / "run_b", tmp_path / "slices_run"], [a, b, slices]


def test_compare_reads_each_figure_where_evaluate_writes_it(
    runs: tuple[list[Path], list[dict]],
) -> None:
    paths, (a, b, _) = runs
    frame = compare_runs(paths)
    assert list(frame.columns) == ["run_a", "run_b", "slices_run"]
    for name, metrics in (("run_a", a), ("run_b", b)):
        model = metrics["model"]
        assert frame.loc["score", name] == model["score"]["score"]
        for term in SCORE_TERMS:
            assert frame.loc[term, name] == model["score"]["terms"][term]
        for c in CONDITIONS:
            assert frame.loc[CONDITION_LABELS[c], name] == model["conditions"][c]["log_loss"]
        assert frame.loc["score, uncalibrated", name] == metrics["model_uncalibrated"]["score"]
        assert frame.loc["prior (out of fold)", name] == metrics["prior"]["score"]
        assert math.isnan(frame.loc["oracle", name]) and frame.loc["studies", name] == 6
    assert frame["run_a"].ne(frame["run_b"]).iloc[:10].all()  # two different runs
    slices = frame["slices_run"]
    assert slices["score"] == slices["foraminal"] == 0.6125 and slices["studies"] == 885
    assert slices.drop(["score", "foraminal", "studies"]).isna().all()


def test_the_table_shows_dashes_and_marks_the_best(runs: tuple[list[Path], list[dict]]) -> None:
    paths, (a, b, _) = runs
    console = Console(width=200, record=True, color_system=None)
    console.print(comparison_table(compare_runs(paths)))
    lines = {
        line.split("│")[1].strip(): line
        for line in console.export_text().splitlines()
        if line.count("│") == 5
    }
    cells = {k: [c.strip() for c in v.split("│")[2:5]] for k, v in lines.items()}
    assert cells["spinal"] == [
        f"{a['model']['score']['terms']['spinal']:.4f}",
        f"{b['model']['score']['terms']['spinal']:.4f}",
        "-",
    ]
    assert cells["foraminal"][2] == "0.6125" and cells["oracle"] == ["-", "-", "-"]
    assert cells["studies"] == ["6", "6", "885"]


def test_cli_compare_writes_the_figure_and_refuses_a_run_without_metrics(
    runs: tuple[list[Path], list[dict]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths, _ = runs
    png = tmp_path / "compare.png"
    monkeypatch.setattr(sys, "argv", ["spinegrade", "compare", *map(str, paths), "--out", str(png)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "slices_run" in capsys.readouterr().out
    # a folder (here one that does not exist yet) gets compare.png inside it
    folder = tmp_path / "figures"
    monkeypatch.setattr(sys, "argv", ["spinegrade", "compare", *map(str, paths), "-o", str(folder)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0 and (folder / "compare.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["spinegrade", "compare", str(paths[0]), str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2
        and "metrics.json: not found" in err
        and len(err.strip().splitlines()) == 1
    )
