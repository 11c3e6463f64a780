"""`spinegrade lr-find`: a short sweep of each stage on the training studies of fold 0 (only those
are read), the figure, and a JSON of the curves whose suggestion the command prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from spinegrade.cli import main
from spinegrade.config import load_config
from spinegrade.data.folds import make_folds
from spinegrade.data.tables import load_tables
from tests.grade.conftest import grade_data  # noqa: F401 - the 8-study RSNA folder fixture

#: Small networks and batches keep the 12-step sweeps short.
SMALL = [
    "data.num_workers=0",
    "grade.backbone=test_resnet",
    "grade.crop_px=16",
    "grade.dim=32",
    "grade.optim.batch_size=2",
    "localize.optim.batch_size=8",
    "localize.backbone=test_resnet",
    "localize.image_size=48",
    "localize.heatmap_stride=4",
]


def _run(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["spinegrade", *argv])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0


@pytest.mark.parametrize(
    "stage, networks", [("grade", ["grader"]), ("localize", ["sagittal", "axial"])]
)
def test_lr_find_sweeps_fold_0_training_studies(
    grade_data: Path,  # noqa: F811
    tmp_path: Path,
    stage: str,
    networks: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "lr"
    argv = ["lr-find", str(grade_data), "--out", str(out), "-c", "tiny", "--stage", stage]
    _run([*argv, "--start", "1e-5", "--end", "10", "--steps", "12", *SMALL], monkeypatch)
    printed = capsys.readouterr().out
    curves = json.loads((out / f"lr_find_{stage}.json").read_text())
    assert (out / f"lr_find_{stage}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(curves["networks"]) == networks
    for c in curves["networks"].values():
        assert 2 <= len(c["lrs"]) == len(c["losses"]) <= 12 and c["lrs"][0] == pytest.approx(1e-5)
        assert c["lrs"][0] <= c["suggestion"] <= c["lrs"][-1]
    assert curves["suggested_lr"] == min(c["suggestion"] for c in curves["networks"].values())
    assert f"suggested: {stage}.optim.lr={curves['suggested_lr']:.3g}" in printed
    # exactly fold 0's training studies were read (the cache holds them), never its held-out ones
    labels = load_tables(grade_data).labels
    folds = make_folds(labels, load_config("tiny").data.folds, load_config("tiny").data.seed)
    train = set(folds.study_id[folds.fold != 0])
    assert {int(p.stem) for p in (out / "cache").glob("*.npz")} == train
    assert curves["train_studies"] == len(train) == 4


def test_lr_find_refuses_an_unknown_stage_in_one_line(
    grade_data: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["lr-find", str(grade_data), "-o", str(tmp_path), "--stage", "grading"]
    monkeypatch.setattr(sys, "argv", ["spinegrade", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert (
        exit_.value.code == 2 and "--stage 'grading'" in err and len(err.strip().splitlines()) == 1
    )
