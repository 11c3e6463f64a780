"""`spinegrade score` and `spinegrade validate` on the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from spinegrade.cli import app
from spinegrade.constants import TARGET_COLUMNS

SPINEGRADE = Path(sys.executable).with_name("spinegrade")
runner = CliRunner()


def _labels_csv(tmp_path: Path, study: int = 44036939) -> Path:
    labels = pd.DataFrame({"study_id": [study], **{c: ["Normal/Mild"] for c in TARGET_COLUMNS}})
    labels["spinal_canal_stenosis_l4_l5"] = "Severe"
    path = tmp_path / "labels.csv"
    labels.to_csv(path, index=False)
    return path


def test_score_json_and_table(rsna: Path, tmp_path: Path) -> None:
    labels = _labels_csv(tmp_path)
    args = ["score", "--labels", str(labels), "--submission", str(rsna / "sample_submission.csv")]
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["score"] == pytest.approx(math.log(3))  # uniform 1/3, one severe spinal level
    assert list(result["terms"]) == ["spinal", "foraminal", "subarticular", "any_severe_spinal"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "any_severe_spinal" in table.output and "1.0986" in table.output


def test_score_error_is_one_line_without_traceback(rsna: Path, tmp_path: Path) -> None:
    sub = pd.read_csv(rsna / "sample_submission.csv")
    sub.loc[0, "severe"] = -1.0
    bad = tmp_path / "bad.csv"
    sub.to_csv(bad, index=False)
    proc = subprocess.run(
        [
            str(SPINEGRADE),
            "score",
            "--labels",
            str(_labels_csv(tmp_path)),
            "--submission",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "negative" in lines[0] and lines[0].startswith("error:")


def test_validate_real_data_exits_zero_with_warnings(rsna: Path) -> None:
    out = runner.invoke(app, ["validate", str(rsna), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["ok"] is True
    kinds = {p["kind"]: p["count"] for p in report["problems"]}
    assert kinds["coordinates on an unexpected series type"] == 5


def test_validate_exits_one_on_errors(tmp_path: Path) -> None:
    root = tmp_path / "rsna"
    root.mkdir()
    labels = pd.DataFrame({"study_id": [1], **{c: ["Normal/Mild"] for c in TARGET_COLUMNS}})
    labels["spinal_canal_stenosis_l1_l2"] = "Very Bad"
    labels.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"study_id": [1], "series_id": [2], "series_description": ["Axial T2"]}).to_csv(
        root / "train_series_descriptions.csv", index=False
    )
    pd.DataFrame(
        columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    ).to_csv(root / "train_label_coordinates.csv", index=False)
    out = runner.invoke(app, ["validate", str(root)])
    assert out.exit_code == 1
    assert "unknown severity" in out.output and "1 error(s)" in out.output
