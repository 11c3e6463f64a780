"""Atomic writes: the target appears whole or not at all, and keeps its old content on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spinegrade.io import atomic_open, write_json, write_text, write_with


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("half of the new")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_writers_see_the_target_suffix_and_folders_are_made(tmp_path: Path) -> None:
    seen: list[str] = []

    def writer(path: Path) -> None:
        seen.append(path.suffix)
        path.write_bytes(b"x")

    out = write_with(tmp_path / "deep" / "er" / "table.csv", writer)
    assert seen == [".csv"] and out.read_bytes() == b"x"
    assert [p.name for p in out.parent.iterdir()] == ["table.csv"]


def test_a_target_without_a_suffix_is_written(tmp_path: Path) -> None:
    # the writer's name once equalled the temporary itself, which was then deleted before the rename
    out = write_with(tmp_path / "comparison", lambda path: path.write_bytes(b"png"))
    assert out.read_bytes() == b"png"
    assert [p.name for p in tmp_path.iterdir()] == ["comparison"]


def test_json_takes_numpy_values_and_paths(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "x.json", {"a": np.arange(3), "p": Path("/x/y"), "f": np.float32(0.5)}
    )
    assert json.loads(path.read_text()) == {"a": [0, 1, 2], "p": "/x/y", "f": 0.5}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(tmp_path / "y.json", {"s": {1, 2}})
    assert not (tmp_path / "y.json").exists()
