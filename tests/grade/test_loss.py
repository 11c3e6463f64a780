"""The loss is the challenge metric: checked against `spinegrade.metrics` on a hand-made case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.constants import ANY_SEVERE_SPINAL, SEVERITIES, TARGET_COLUMNS, TARGETS, row_id
from spinegrade.grade.loss import any_severe_term, grade_loss, group_terms
from spinegrade.metrics import score


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    """Three studies, random logits, labels with every class, some blanks, one study without spinal
    labels."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 25, 3, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 3, (3, 25), generator=g)
    labels[0, [2, 7, 20]] = -1  # blanks
    labels[1, 0:5] = torch.tensor([0, 1, 0, 0, 0])  # spinal: no severe, a moderate -> weight 2
    labels[2, 0:5] = -1  # no labelled spinal level: not in the any-severe term
    labels[0, 0:5] = torch.tensor([0, 2, -1, 1, 0])  # any severe, over labelled levels only
    return logits, labels


def _metric(logits: torch.Tensor, labels: torch.Tensor):  # type: ignore[no-untyped-def]
    probs = torch.softmax(logits, -1).numpy()
    studies = [101, 102, 103]
    wide = pd.DataFrame({"study_id": studies})
    for j, col in enumerate(TARGET_COLUMNS):
        wide[col] = [SEVERITIES[int(k)] if k >= 0 else np.nan for k in labels[:, j]]
    sub = pd.DataFrame(
        {
            "row_id": [row_id(s, c, lv) for s in studies for c, lv in TARGETS],
            **{name: probs[:, :, k].reshape(-1) for k, name in enumerate(SEVERITIES)},
        }
    )
    return score(wide, sub)


def test_loss_equals_the_challenge_score_and_its_terms() -> None:
    logits, labels = _case()
    expected = _metric(logits, labels)
    assert float(grade_loss(logits, labels, any_severe_weight=1.0)) == pytest.approx(
        expected.score, rel=1e-6
    )
    for group, value in group_terms(logits, labels).items():
        assert float(value) == pytest.approx(expected.terms[group], rel=1e-6)
    assert float(any_severe_term(logits, labels)) == pytest.approx(
        expected.terms[ANY_SEVERE_SPINAL], rel=1e-6
    )


def test_any_severe_weight_and_masking() -> None:
    logits, labels = _case()
    terms = group_terms(logits, labels)
    any_term = float(any_severe_term(logits, labels))
    groups = sum(float(t) for t in terms.values())
    assert float(grade_loss(logits, labels, 3.0)) == pytest.approx(
        (groups + 3 * any_term) / 6, rel=1e-6
    )
    assert float(grade_loss(logits, labels, 0.0)) == pytest.approx(groups / 3, rel=1e-6)
    # changing the logits of blank rows changes nothing
    moved = logits.clone()
    moved[labels < 0] += 5.0
    assert float(grade_loss(moved, labels)) == pytest.approx(
        float(grade_loss(logits, labels)), rel=1e-9
    )
    # all blank: a zero that still has a graph
    blank = torch.full_like(labels, -1)
    out = grade_loss(logits.clone().requires_grad_(True), blank)
    assert float(out.detach()) == 0.0 and out.requires_grad


def test_loss_gradient_pushes_towards_the_label() -> None:
    logits = torch.zeros(1, 25, 3, requires_grad=True)
    labels = torch.full((1, 25), -1)
    labels[0, 10] = 2
    grade_loss(logits, labels).backward()
    assert logits.grad[0, 10, 2] < 0 < logits.grad[0, 10, 0]


def test_a_subset_of_targets_is_scored_on_its_own_groups() -> None:
    """With the 10 foraminal targets only, the loss is the foraminal term of the metric (no
    spinal, subarticular or any-severe term), equal to the full loss's foraminal term."""
    logits, labels = _case()
    keep = [i for i, (c, _) in enumerate(TARGETS) if "foraminal" in c]
    subset = [TARGETS[i] for i in keep]
    terms = group_terms(logits[:, keep], labels[:, keep], subset)
    assert terms["spinal"] is None and terms["subarticular"] is None
    assert any_severe_term(logits[:, keep], labels[:, keep], subset) is None
    full = group_terms(logits, labels)["foraminal"]
    assert float(terms["foraminal"]) == pytest.approx(float(full))
    loss = grade_loss(logits[:, keep], labels[:, keep], 1.0, subset)
    assert float(loss) == pytest.approx(_metric(logits, labels).terms["foraminal"], rel=1e-6)
