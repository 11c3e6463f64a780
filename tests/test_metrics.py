"""The challenge metric against hand-computed cases, the sample submission and an independent
numpy implementation on the real train.csv."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import (
    CONDITIONS,
    LEVELS,
    SCORE_TERMS,
    SEVERITIES,
    TARGET_COLUMNS,
    TARGETS,
    row_id,
    target_column,
)
from spinegrade.errors import DataError, SubmissionError
from spinegrade.metrics import (
    constant_prior_submission,
    detailed_metrics,
    normalise_probabilities,
    read_submission,
    score,
    score_files,
)

SPINAL = "spinal_canal_stenosis"
LEFT_FORAMEN = "left_neural_foraminal_narrowing"
RIGHT_SUBART = "right_subarticular_stenosis"


def make_labels(cells: dict[int, dict[str, object]]) -> pd.DataFrame:
    """Wide labels: every target 'normal_mild' unless overridden (value None = blank)."""
    rows = []
    for study, overrides in cells.items():
        row = {"study_id": study, **{c: "normal_mild" for c in TARGET_COLUMNS}}
        row.update({k: (np.nan if v is None else v) for k, v in overrides.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def make_submission(studies: list[int], default=(0.7, 0.2, 0.1), rows=None) -> pd.DataFrame:
    """25 rows per study with `default` probabilities, `rows` = {row_id: (p0, p1, p2)} overrides."""
    rows = rows or {}
    ids = [row_id(s, c, lv) for s in studies for c, lv in TARGETS]
    values = np.array([rows.get(r, default) for r in ids], dtype=float)
    return pd.DataFrame({"row_id": ids, **{s: values[:, i] for i, s in enumerate(SEVERITIES)}})


def test_hand_computed_two_studies() -> None:
    labels = make_labels(
        {
            1: {
                f"{SPINAL}_l2_l3": "moderate",
                f"{SPINAL}_l3_l4": "severe",
                f"{SPINAL}_l4_l5": None,
                f"{LEFT_FORAMEN}_l4_l5": "moderate",
                f"{RIGHT_SUBART}_l5_s1": "severe",
                f"{RIGHT_SUBART}_l1_l2": None,
            },
            2: {f"{SPINAL}_l1_l2": "moderate"},
        }
    )
    sub = make_submission(
        [1, 2],
        rows={
            row_id(1, SPINAL, "l4_l5"): (
                0.05,
                0.05,
                0.9,
            ),  # blank: must not enter the any-severe max
            row_id(2, SPINAL, "l4_l5"): (0.5, 0.2, 0.3),  # study 2's largest severe probability
        },
    )
    result = score(labels, sub)

    n07, n02, n01 = -math.log(0.7), -math.log(0.2), -math.log(0.1)
    # spinal: study 1 labelled l1 N, l2 M, l3 S, l5 N (l4 blank) -> weights 1 + 2 + 4 + 1;
    # study 2: l1 M, l2/l3/l5 N at .7, l4 N at .5 -> weights 2 + 1 + 1 + 1 + 1
    spinal = ((n07 + 2 * n02 + 4 * n01 + n07) + (2 * n02 + 3 * n07 - math.log(0.5))) / (8 + 6)
    # foraminal: 20 rows, one moderate (w 2), 19 normal
    foraminal = (2 * n02 + 19 * n07) / (2 + 19)
    # subarticular: 19 labelled rows (one blank), one severe (w 4), 18 normal
    subarticular = (4 * n01 + 18 * n07) / (4 + 18)
    # any severe: study 1 label 1, weight 4, p = .1 (blank .9 ignored); study 2 label 0, weight 2, p
    # = .3
    any_severe = (4 * n01 + 2 * -math.log(1 - 0.3)) / (4 + 2)

    expected = dict(zip(SCORE_TERMS, (spinal, foraminal, subarticular, any_severe)))
    assert result.terms == pytest.approx(expected, rel=1e-12)
    assert list(result.terms) == list(SCORE_TERMS)
    assert result.score == pytest.approx(sum(expected.values()) / 4, rel=1e-12)
    assert result.n_rows == {
        "spinal": 9,
        "foraminal": 20,
        "subarticular": 19,
        "any_severe_spinal": 2,
    }


def test_zero_probability_is_clipped_not_infinite() -> None:
    labels = make_labels({1: {}})
    sub = make_submission(
        [1], default=(1.0, 0.0, 0.0), rows={row_id(1, SPINAL, "l1_l2"): (0.0, 1.0, 0.0)}
    )
    result = score(labels, sub)
    # clip to [1e-15, 1-1e-15] then normalise: p_true = 1e-15 / (1e-15 + (1 - 1e-15) + 1e-15)
    p_low = 1e-15 / (1 + 1e-15)
    p_high = (1 - 1e-15) / (1 + 1e-15)
    assert result.terms["spinal"] == pytest.approx((-math.log(p_low) - 4 * math.log(p_high)) / 5)
    assert math.isfinite(result.score)


def test_rows_are_normalised() -> None:
    labels = make_labels({1: {f"{SPINAL}_l1_l2": "severe"}})
    scaled = make_submission([1], default=(0.2, 0.1, 0.1))  # sums to 0.4 -> (.5, .25, .25)
    plain = make_submission([1], default=(0.5, 0.25, 0.25))
    assert score(labels, scaled).terms == pytest.approx(score(labels, plain).terms, rel=1e-12)
    assert score(labels, plain).terms["foraminal"] == pytest.approx(-math.log(0.5))


def test_normalise_clips_before_dividing() -> None:
    probs = normalise_probabilities(np.array([[2.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(probs, np.full((2, 3), 1 / 3))


def test_all_blank_group_is_nan_and_left_out_of_the_mean() -> None:
    labels = make_labels({1: {target_column(c, lv): None for c in CONDITIONS[3:] for lv in LEVELS}})
    result = score(labels, make_submission([1]))
    assert math.isnan(result.terms["subarticular"]) and result.n_rows["subarticular"] == 0
    others = [result.terms[t] for t in SCORE_TERMS if t != "subarticular"]
    assert result.score == pytest.approx(sum(others) / 3)


@pytest.mark.parametrize(
    ("severe_level", "any_term"), [(None, math.log(1.5)), ("l4_l5", math.log(3))]
)
def test_sample_submission_uniform(
    rsna: Path, tmp_path: Path, severe_level: str | None, any_term: float
) -> None:
    cells = {f"{SPINAL}_l3_l4": "moderate", f"{LEFT_FORAMEN}_l5_s1": "moderate"}
    if severe_level:
        cells[f"{SPINAL}_{severe_level}"] = "severe"
    labels = make_labels({44036939: cells})
    labels_csv = tmp_path / "labels.csv"
    labels.to_csv(labels_csv, index=False)
    result = score_files(labels_csv, rsna / "sample_submission.csv")
    # uniform 1/3: every 3-class term is log 3 whatever the weights; any-severe p = 1/3:
    # label 0 -> -log(2/3) = log 1.5, label 1 -> -log(1/3) = log 3
    expected = [math.log(3)] * 3 + [any_term]
    assert list(result.terms.values()) == pytest.approx(expected, rel=1e-12)
    assert result.score == pytest.approx(sum(expected) / 4, rel=1e-12)


def _independent_prior_score(train_csv: Path) -> float:
    """The metric and the weighted per-target prior written out plainly with numpy."""
    raw = pd.read_csv(train_csv)
    code = {"Normal/Mild": 0, "Moderate": 1, "Severe": 2}
    y = raw[list(TARGET_COLUMNS)].apply(lambda col: col.map(code)).to_numpy()  # (n, 25), NaN blank
    w_of = np.array([1.0, 2.0, 4.0])
    prior = np.zeros((25, 3))
    for t in range(25):
        col = y[:, t][~np.isnan(y[:, t])].astype(int)
        prior[t] = np.bincount(col, weights=w_of[col], minlength=3)
    prior /= prior.sum(axis=1, keepdims=True)
    prior = np.clip(prior, 1e-15, 1 - 1e-15)
    prior /= prior.sum(axis=1, keepdims=True)
    terms = []
    for group in ([0], [1, 2], [3, 4]):  # condition indices of each group
        num = den = 0.0
        for t in [c * 5 + lv for c in group for lv in range(5)]:
            col = y[:, t][~np.isnan(y[:, t])].astype(int)
            num += np.sum(w_of[col] * -np.log(prior[t, col]))
            den += np.sum(w_of[col])
        terms.append(num / den)
    num = den = 0.0
    for row in y[:, :5]:
        labelled = ~np.isnan(row)
        if not labelled.any():
            continue
        truth = row[labelled].astype(int)
        weight = w_of[truth].max()
        p = prior[:5, 2][labelled].max()
        num += weight * -np.log(p if (truth == 2).any() else 1 - p)
        den += weight
    terms.append(num / den)
    return float(np.mean(terms))


def test_constant_prior_on_real_train_matches_independent_numpy(rsna: Path) -> None:
    from spinegrade.data.tables import read_labels

    labels = read_labels(rsna / "train.csv")
    sub = constant_prior_submission(labels)
    assert len(sub) == 25 * 1975
    result = score(labels, sub)
    assert result.score == pytest.approx(_independent_prior_score(rsna / "train.csv"), rel=1e-10)
    assert 0.78 < result.score < 0.80  # the known figure for a constant prior (0.7897)
    plain = score(labels, constant_prior_submission(labels, weighted=False, per="condition"))
    assert plain.score > result.score  # the weighted per-target prior is the better constant


def test_constant_prior_values_and_study_ids() -> None:
    labels = make_labels({1: {f"{SPINAL}_l1_l2": "severe"}, 2: {f"{SPINAL}_l1_l2": None}})
    sub = constant_prior_submission(labels, study_ids=[7, 8, 9])
    assert len(sub) == 75 and sub["row_id"].iloc[0] == row_id(7, SPINAL, "l1_l2")
    first = sub.iloc[0][list(SEVERITIES)].to_numpy(float)
    np.testing.assert_allclose(first, [0.0, 0.0, 1.0])  # one labelled cell, severe
    plain = constant_prior_submission(labels, per="condition", weighted=False).iloc[0]
    # spinal pooled: 9 labelled cells, one severe -> (8/9, 0, 1/9)
    np.testing.assert_allclose(plain[list(SEVERITIES)].to_numpy(float), [8 / 9, 0, 1 / 9])


def test_extra_rows_for_blank_targets_are_ignored() -> None:
    labels = make_labels({1: {f"{SPINAL}_l1_l2": None}})
    full = make_submission([1])
    without_blank = full[full["row_id"] != row_id(1, SPINAL, "l1_l2")]
    assert score(labels, full).terms == score(labels, without_blank).terms


def _bad(sub: pd.DataFrame, kind: str) -> pd.DataFrame:
    sub = sub.copy()
    if kind == "missing row":
        return sub.iloc[1:]
    if kind == "nan":
        sub.loc[3, "moderate"] = np.nan
    elif kind == "inf":
        sub.loc[3, "severe"] = np.inf
    elif kind == "negative":
        sub.loc[3, "normal_mild"] = -0.1
    elif kind == "text":
        sub["moderate"] = sub["moderate"].astype(object)
        sub.loc[3, "moderate"] = "abc"
    elif kind == "unparseable row_id":
        sub.loc[3, "row_id"] = "1_spinal_l9"
    elif kind == "unknown study":
        sub.loc[len(sub)] = [row_id(99, SPINAL, "l1_l2"), 1.0, 0.0, 0.0]
    elif kind == "duplicate":
        sub = pd.concat([sub, sub.iloc[[5]]], ignore_index=True)
    elif kind == "missing column":
        sub = sub.drop(columns="severe")
    return sub


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing row", "1 labelled row(s) missing, e.g. 1_spinal_canal_stenosis_l1_l2"),
        ("nan", "NaN"),
        ("inf", "infinite"),
        ("negative", "negative"),
        ("text", "non-numeric"),
        ("unparseable row_id", "not a valid row_id"),
        ("unknown study", "study 99"),
        ("duplicate", "duplicate row_id"),
        ("missing column", "missing column(s) severe"),
    ],
)
def test_bad_submissions_raise(kind: str, message: str) -> None:
    labels = make_labels({1: {}})
    with pytest.raises(SubmissionError) as info:
        score(labels, _bad(make_submission([1]), kind))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_labels_raise_data_error() -> None:
    labels = make_labels({1: {f"{SPINAL}_l1_l2": "Sever"}})
    with pytest.raises(DataError, match="unknown severity"):
        score(labels, make_submission([1]))
    with pytest.raises(DataError, match="more than once"):
        score(pd.concat([make_labels({1: {}})] * 2), make_submission([1]))


def test_read_submission_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="not found"):
        read_submission(tmp_path / "nope.csv")


def test_detailed_metrics() -> None:
    labels = make_labels(
        {
            1: {f"{SPINAL}_l1_l2": "severe", f"{SPINAL}_l2_l3": "moderate"},
            2: {f"{SPINAL}_l3_l4": "moderate"},
        }
    )
    sub = make_submission(
        [1, 2],
        default=(0.8, 0.1, 0.1),
        rows={
            row_id(1, SPINAL, "l1_l2"): (0.1, 0.1, 0.8),  # right
            row_id(1, SPINAL, "l2_l3"): (0.1, 0.8, 0.1),  # right
            row_id(2, SPINAL, "l3_l4"): (0.1, 0.1, 0.8),  # wrong: predicts severe
        },
    )
    out = detailed_metrics(labels, sub)
    spinal = out["conditions"][SPINAL]
    assert spinal["n"] == 10
    assert spinal["confusion"] == [[7, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert spinal["accuracy"] == pytest.approx(9 / 10)
    # per-class F1: normal 1, moderate 2*1*.5/(1.5) = 2/3, severe 2*.5*1/1.5 = 2/3
    assert spinal["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert spinal["auc"]["normal_mild"] == pytest.approx(1.0)
    assert spinal["levels"]["l1_l2"] == pytest.approx((4 * -math.log(0.8) + -math.log(0.8)) / 5)
    assert spinal["log_loss"] == pytest.approx(out["score"]["terms"]["spinal"])
    foramen = out["conditions"][LEFT_FORAMEN]
    assert foramen["auc"]["severe"] is None and any("severe" in n for n in foramen["notes"])
    assert foramen["confusion"] == [[10, 0, 0], [0, 0, 0], [0, 0, 0]]
    # a group pools its conditions' rows (left and right together)
    foraminal = out["groups"]["foraminal"]
    assert foraminal["n"] == 20 and foraminal["log_loss"] == pytest.approx(
        out["score"]["terms"]["foraminal"]
    )
    assert foraminal["confusion"] == [[20, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert out["groups"]["spinal"] == spinal
