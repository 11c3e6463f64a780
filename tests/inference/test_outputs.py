"""What `predict` writes per batch and per study: the submission's order, errors.csv, the record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.constants import SEVERITIES, SUBMISSION_COLUMNS, TARGETS, row_id
from spinegrade.cv.ensemble import FLAG_STUDY_FAILED, prior_prediction
from spinegrade.inference.outputs import (
    errors_frame,
    prediction_record,
    write_errors,
    write_submission,
)

PRIOR = np.tile([0.7, 0.2, 0.1], (len(TARGETS), 1))


def test_the_submission_keeps_the_study_order_and_25_rows_each(tmp_path: Path) -> None:
    preds = [prior_prediction(s, PRIOR, "unreadable") for s in (30, 10, 20)]
    preds[1].probs[0] = [0.1, 0.2, 0.7]
    sub = pd.read_csv(write_submission(tmp_path / "submission.csv", preds))
    assert list(sub.columns) == list(SUBMISSION_COLUMNS)
    assert sub.row_id.tolist() == [row_id(s, c, lv) for s in (30, 10, 20) for c, lv in TARGETS]
    np.testing.assert_allclose(sub.loc[25, list(SEVERITIES)], [0.1, 0.2, 0.7])
    empty = pd.read_csv(write_submission(tmp_path / "none.csv", []))
    assert list(empty.columns) == list(SUBMISSION_COLUMNS) and empty.empty


def test_errors_csv_is_written_even_when_nothing_failed(tmp_path: Path) -> None:
    assert pd.read_csv(write_errors(tmp_path / "errors.csv", [])).columns.tolist() == [
        "study_id",
        "path",
        "reason",
    ]
    rows = [(None, "/x/readme.txt", "ignored: not DICOM"), (7, "/x/7", "no usable series")]
    frame = errors_frame(rows)
    assert frame.study_id.isna().tolist() == [True, False] and int(frame.study_id[1]) == 7


def test_the_record_of_a_failed_study_says_so_and_locates_nothing() -> None:
    pred = prior_prediction(5, PRIOR, "no usable series in the study")
    record = prediction_record(pred, "/data/5", None, {"folds": [0]}, error="no usable series")
    assert record["status"] == "failed" and record["error"] == "no usable series"
    assert len(record["targets"]) == 25 and record["series"] == []
    for t in record["targets"]:
        assert t["pixel"] is None and t["world_lps_mm"] is None and t["series_id"] is None
        assert t["most_likely"] == "normal_mild" and FLAG_STUDY_FAILED in t["flags"]
        assert abs(sum(t["probabilities"].values()) - 1.0) < 1e-9
