"""The slices run folder: the README lists exactly its layout; a folder of `spinegrade train` is
not taken for one."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from spinegrade.config import load_config
from spinegrade.cv.folder import RunFolder
from spinegrade.errors import DataError
from spinegrade.slices.folder import LAYOUT, SlicesRun

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_exactly_the_layout() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- slices-run-folder -->", "<!-- /slices-run-folder -->"
    block = text[text.index(start) : text.index(end)]
    assert re.findall(r"^\| `([^`]+)` \| (.+) \|$", block, flags=re.M) == list(LAYOUT)


def test_a_run_without_a_mode_is_refused_in_one_line(tmp_path: Path) -> None:
    folds = pd.DataFrame({"study_id": [1, 2], "fold": [0, 1]})
    RunFolder(tmp_path / "run").start(load_config("tiny"), folds, tmp_path, [0, 1], 1)
    with pytest.raises(DataError, match="not a run folder of `spinegrade slices train`"):
        SlicesRun(tmp_path / "run").check()
