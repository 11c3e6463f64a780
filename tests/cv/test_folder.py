"""The run folder contract: one list of names (the README's is tested against it), the format
version, and loading that never runs code from the folder."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from spinegrade.cli import main
from spinegrade.cv.folder import FORMAT_VERSION, LAYOUT, RUN_JSON, RunFolder
from spinegrade.errors import DataError
from tests.training.test_checkpoint import write_hostile_checkpoint

README = Path(__file__).resolve().parents[2] / "README.md"


def _cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["spinegrade", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    return int(exit_.value.code or 0), capsys.readouterr().err


def test_the_readme_lists_exactly_the_layout() -> None:
    text = README.read_text(encoding="utf-8")
    block = text[text.index("<!-- run-folder -->") : text.index("<!-- /run-folder -->")]
    listed = re.findall(r"^\| `([^`]+)` \| (.+) \|$", block, flags=re.M)
    assert listed == list(LAYOUT)


def test_a_folder_of_another_format_gets_one_line_saying_what_to_do(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    old = tmp_path / "old-run"
    shutil.copytree(tiny["run"], old)
    info = json.loads((old / RUN_JSON).read_text())
    info.pop("format")  # what spinegrade 0.1 wrote
    (old / RUN_JSON).write_text(json.dumps(info))
    with pytest.raises(
        DataError, match=f"format 1, but this spinegrade .* reads format {FORMAT_VERSION}"
    ):
        RunFolder(old).check()
    code, err = _cli(
        [
            "predict",
            old,
            tiny["data"] / "train_images",
            "--out",
            tmp_path / "out",
            "--workers",
            "0",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "train it again" in err, err


def test_predict_refuses_a_checkpoint_that_would_run_code(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    run = tmp_path / "handed-over-run"
    shutil.copytree(tiny["run"], run)
    victim = tmp_path / "pwned"
    write_hostile_checkpoint(run / "fold_0" / "grader" / "model.pt", victim)
    code, err = _cli(
        [
            "predict",
            run,
            tiny["data"] / "train_images",
            "--out",
            tmp_path / "out",
            "--workers",
            "0",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "grader/model.pt: refused" in err, err
    assert not victim.exists()


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a run folder"):
        RunFolder(tmp_path).check()
    assert RunFolder(tmp_path).completed_folds() == []


def test_run_json_carries_the_callers_extra_entries(tmp_path: Path) -> None:
    import pandas as pd

    from spinegrade.config import load_config

    run = RunFolder(tmp_path / "run")
    folds = pd.DataFrame({"study_id": [1, 2], "fold": [0, 1]})
    run.start(load_config("tiny"), folds, tmp_path, [0, 1], 1, extra={"slices_mode": "crops"})
    info = run.info()
    assert info["slices_mode"] == "crops" and info["format"] == FORMAT_VERSION
