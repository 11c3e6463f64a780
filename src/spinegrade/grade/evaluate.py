"""Scoring the grader alone: held-out studies graded from their TRUE points, next to the baselines.

This isolates stage 2 (no localisation error): the figure to compare with the constant prior
(fitted on the training studies) and, on synthetic data, with `oracle.csv` (the best possible).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from spinegrade.constants import SEVERITIES, TARGETS
from spinegrade.data.tables import load_tables
from spinegrade.errors import SpinegradeError
from spinegrade.grade.predict import Grader
from spinegrade.grade.train import iter_studies
from spinegrade.io import write_json, write_with
from spinegrade.metrics import constant_prior_submission, read_submission, score, submission_rows

ORACLE_FILE = "oracle.csv"


def grade_true_points(
    grader: Grader,
    data_root: str | Path,
    study_ids: list[int],
    prior: np.ndarray,
    *,
    cache_dir: str | Path | None = None,
    tta: bool = False,
    progress: bool = True,
) -> tuple[pd.DataFrame, int]:
    """Submission for `study_ids` graded at their true coordinates; `prior (25, 3)` fills the
    targets
    (and studies) that cannot be graded. Returns the submission and the number of filled rows."""
    coords = load_tables(data_root).coordinates
    assert coords is not None
    by_study = dict(tuple(coords.groupby("study_id")))
    failed: dict[int, str] = {}
    parts, filled = [], 0
    studies = iter_studies(data_root, study_ids, cache_dir, failed=failed, progress=progress)
    for sid, study in tqdm(
        studies, total=len(study_ids), desc="grade: evaluate", disable=not progress
    ):
        try:
            probs = grader.predict(study, by_study.get(sid, coords.iloc[:0]), tta=tta)
        except SpinegradeError as exc:
            failed[sid] = str(exc)
            continue
        missing = np.isnan(probs).any(axis=1)
        filled += int(missing.sum())
        parts.append(submission_rows(sid, np.where(missing[:, None], prior, probs)))
    for sid in failed:
        tqdm.write(f"grade: study {sid} not graded (prior used): {failed[sid]}")
        parts.append(submission_rows(sid, prior))
        filled += len(TARGETS)
    return pd.concat(parts, ignore_index=True), filled


def evaluate_grader(
    data_root: str | Path,
    checkpoint: str | Path,
    held_ids: list[int],
    train_ids: list[int],
    *,
    out: str | Path | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    tta: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the grader on `held_ids` from true points, with the constant prior of `train_ids` and,
    when the data folder has one, `oracle.csv`, on the same studies. Writes
    `out/grade_eval.json`."""
    tables = load_tables(data_root)
    assert tables.labels is not None
    labels = tables.labels[tables.labels["study_id"].isin(held_ids)]
    train_labels = tables.labels[tables.labels["study_id"].isin(train_ids)]
    prior_sub = constant_prior_submission(train_labels, labels["study_id"])
    prior = prior_sub[list(SEVERITIES)].to_numpy()[: len(TARGETS)]
    submission, filled = grade_true_points(
        Grader.load(checkpoint, device),
        data_root,
        labels["study_id"].tolist(),
        prior,
        cache_dir=cache_dir,
        tta=tta,
        progress=progress,
    )
    report: dict[str, Any] = {
        "studies": int(len(labels)),
        "filled_with_prior": filled,
        "tta": tta,
        "model": score(labels, submission).to_dict(),
        "prior": score(labels, prior_sub).to_dict(),
    }
    oracle_path = Path(data_root) / ORACLE_FILE
    if oracle_path.is_file():
        oracle = read_submission(oracle_path)
        wanted = set(submission["row_id"])
        report["oracle"] = score(
            labels, oracle[oracle["row_id"].astype(str).isin(wanted)]
        ).to_dict()
        report["model_over_oracle"] = report["model"]["score"] / report["oracle"]["score"]
    if out is not None:
        write_json(Path(out) / "grade_eval.json", report)
        write_with(
            Path(out) / "grade_eval_submission.csv", lambda p: submission.to_csv(p, index=False)
        )
    return report
