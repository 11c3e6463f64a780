"""Temperature calibration: hand-computed temperatures, the metric's weights, and cross-fitting that
never uses a fold's own labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import SEVERITIES, TARGETS, row_id
from spinegrade.grade.calibrate import (
    apply_temperature,
    calibrate_rows,
    cross_fit,
    fit_temperature,
    weighted_log_loss,
)


def test_temperature_divides_the_logits() -> None:
    p = np.array([[0.7, 0.2, 0.1]])
    # T = 2: softmax(log p / 2) = sqrt(p) / sum(sqrt(p))
    expected = np.sqrt(p) / np.sqrt(p).sum()
    np.testing.assert_allclose(apply_temperature(p, 2.0), expected, rtol=1e-12)
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, rtol=1e-12)
    assert apply_temperature(p, 0.5)[0, 0] > 0.7  # T < 1 sharpens


def test_weighted_log_loss_uses_the_metric_weights() -> None:
    p = np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    labels = np.array([0, 2])  # weights 1 and 4
    expected = (1 * -np.log(0.5) + 4 * -np.log(0.5)) / 5
    assert weighted_log_loss(p, labels) == pytest.approx(expected)


def test_the_fitted_temperature_undoes_over_confidence() -> None:
    labels = np.repeat([0, 1, 2], [600, 300, 100])  # class frequencies exactly (0.6, 0.3, 0.1)
    # the weighted loss is minimised by q_k = w_k p_k / sum(w p) = (0.6, 0.6, 0.4) / 1.6;
    # a model that outputs q sharpened by T = 1/3 is fixed by exactly T = 3
    q = np.array([0.6, 0.6, 0.4]) / 1.6
    sharp = apply_temperature(np.tile(q, (len(labels), 1)), 1 / 3)
    t = fit_temperature(sharp, labels)
    assert t == pytest.approx(3.0, rel=0.01)
    assert (
        weighted_log_loss(apply_temperature(sharp, t), labels)
        < weighted_log_loss(sharp, labels) - 0.05
    )


def test_calibration_never_sharpens() -> None:
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    q = np.array([0.6, 0.6, 0.4]) / 1.6  # the best constant (see above); softened by T = 3 ...
    soft = apply_temperature(np.tile(q, (len(labels), 1)), 3.0)
    # ... would be undone by T = 1/3, but temperatures below 1 are not fitted
    assert fit_temperature(soft, labels) == pytest.approx(1.0, abs=0.01)


def _rows(study: int, p: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row_id": [row_id(study, c, lv) for c, lv in TARGETS],
            **{s: p[:, k] for k, s in enumerate(SEVERITIES)},
        }
    )


def test_cross_fitting_uses_only_the_other_folds() -> None:
    rng = np.random.default_rng(1)
    studies = list(range(1, 41))
    fold_of = {s: s % 2 for s in studies}
    oof, truth = [], []
    for s in studies:
        labels = rng.integers(0, 3, size=len(TARGETS))
        # fold 1's model is right and confident; fold 0's is confidently wrong
        good = np.full((len(TARGETS), 3), 0.05) + 0.85 * np.eye(3)[labels]
        wrong = np.full((len(TARGETS), 3), 0.05) + 0.85 * np.eye(3)[(labels + 1) % 3]
        oof.append(_rows(s, good if fold_of[s] else wrong))
        truth.append(
            pd.DataFrame(
                {
                    "row_id": oof[-1]["row_id"],
                    "study_id": s,
                    "condition": [c for c, _ in TARGETS],
                    "label": labels,
                }
            )
        )
    raw, truth_df = pd.concat(oof, ignore_index=True), pd.concat(truth, ignore_index=True)
    calibrated, record = cross_fit(raw, truth_df, fold_of)
    assert list(calibrated.columns) == list(raw.columns)
    assert calibrated["row_id"].tolist() == raw["row_id"].tolist()
    # fold 0's rows are calibrated with what fold 1 taught (sharpen or keep), so they stay wrong;
    # had fold 0's own labels been used, its temperature would have flattened them to near uniform
    t0, t1 = record["folds"]["0"], record["folds"]["1"]
    assert all(t < 1.2 for t in t0.values())  # fitted on fold 1: a good model
    assert all(t > 3.0 for t in t1.values())  # fitted on fold 0: a wrong model
    f0 = calibrated[raw["row_id"].str.split("_").str[0].astype(int) % 2 == 0]
    assert f0[list(SEVERITIES)].max(axis=1).min() > 0.85


def test_rows_the_grader_did_not_produce_are_neither_fitted_nor_changed() -> None:
    """Prior-filled rows are not model outputs: the ensemble never calibrates them, nor does OOF."""
    rows, truth, graded = [], [], []
    for s in range(1, 21):
        p = np.tile([0.98, 0.01, 0.01], (len(TARGETS), 1))  # over-confident: T > 1 helps
        rows.append(_rows(s, p))
        truth.append(
            pd.DataFrame(
                {
                    "row_id": rows[-1]["row_id"],
                    "study_id": s,
                    "condition": [c for c, _ in TARGETS],
                    "label": s % 3,
                }
            )
        )
        graded.append(np.arange(len(TARGETS)) != 0)  # target 0 of every study holds the prior
    raw = pd.concat(rows, ignore_index=True)
    mask = np.concatenate(graded)
    calibrated, record = cross_fit(
        raw, pd.concat(truth, ignore_index=True), {s: s % 2 for s in range(1, 21)}, graded=mask
    )
    assert all(t > 1.5 for t in record["folds"]["0"].values())
    np.testing.assert_array_equal(calibrated[~mask][list(SEVERITIES)], raw[~mask][list(SEVERITIES)])
    assert (calibrated[mask]["normal_mild"] < 0.9).all()


def test_a_single_fold_is_left_uncalibrated() -> None:
    raw = _rows(7, np.tile([0.9, 0.05, 0.05], (len(TARGETS), 1)))
    truth = pd.DataFrame(
        {"row_id": raw["row_id"], "study_id": 7, "condition": [c for c, _ in TARGETS], "label": 2}
    )
    calibrated, record = cross_fit(raw, truth, {7: 0})
    pd.testing.assert_frame_equal(calibrated, raw)
    assert record["folds"] == {} and "not calibrated" in record["note"]  # every fold keeps T = 1


def test_calibrate_rows_applies_each_groups_temperature() -> None:
    rows = _rows(3, np.tile([0.7, 0.2, 0.1], (len(TARGETS), 1)))
    rows["condition"] = [c for c, _ in TARGETS]
    out = calibrate_rows(rows, {"spinal": 2.0, "foraminal": 1.0, "subarticular": 0.5})
    spinal = out[out.condition == "spinal_canal_stenosis"][list(SEVERITIES)].to_numpy()
    foramen = out[out.condition == "left_neural_foraminal_narrowing"][list(SEVERITIES)].to_numpy()
    np.testing.assert_allclose(spinal, apply_temperature(np.tile([0.7, 0.2, 0.1], (5, 1)), 2.0))
    np.testing.assert_allclose(foramen, np.tile([0.7, 0.2, 0.1], (5, 1)))
