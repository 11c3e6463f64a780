"""The loss is the challenge metric: checked against `spinegrade.metrics` on a hand-made case; the
mirror-consistency term is 0 for a mirror-equivariant model and matches a hand computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.constants import ANY_SEVERE_SPINAL, SEVERITIES, TARGET_COLUMNS, TARGETS, row_id
from spinegrade.grade.augment import MIRROR_INDEX
from spinegrade.grade.loss import any_severe_term, grade_loss, group_terms, mirror_consistency
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


def test_the_consistency_term_is_zero_for_a_mirror_equivariant_model() -> None:
    """A model whose twin's prediction for slot `MIRROR_INDEX[i]` is its prediction for `i`."""
    logits, _ = _case()
    valid = torch.ones(3, 25, dtype=torch.bool)
    assert float(mirror_consistency(logits, logits[:, MIRROR_INDEX], valid)) == 0.0
    # ... but not for one that grades the twin's slots as if nothing had been swapped
    assert float(mirror_consistency(logits, logits, valid)) > 0.01


#: A left/right pair and the canal at one level: the mirror swaps slots 0 and 1, keeps 2.
PAIR = [
    ("left_neural_foraminal_narrowing", "l1_l2"),
    ("right_neural_foraminal_narrowing", "l1_l2"),
    ("spinal_canal_stenosis", "l1_l2"),
]


def test_the_consistency_term_by_hand() -> None:
    log = lambda *p: torch.tensor(p, dtype=torch.float64).log()  # noqa: E731
    logits = torch.stack([log(0.5, 0.25, 0.25), log(0.2, 0.5, 0.3), log(0.2, 0.3, 0.5)])[None]
    # the twin: slot 1 grades the mirror of target 0, slot 0 that of target 1, slot 2 the canal's
    twin = torch.stack([log(0.2, 0.5, 0.3), log(0.25, 0.5, 0.25), log(0.5, 0.3, 0.2)])[None]
    # (p - q) . (log p - log q) / 2 per target: 0.25 ln 2 (target 0), 0 (1), 0.3 ln 2.5 (canal)
    left, canal = 0.25 * np.log(2), 0.3 * np.log(2.5)
    valid = torch.ones(1, 3, dtype=torch.bool)
    assert float(mirror_consistency(logits, twin, valid, PAIR)) == pytest.approx(
        (left + canal) / 3, rel=1e-6
    )
    valid[0, 2] = False  # the canal has no crop: it is not averaged over
    assert float(mirror_consistency(logits, twin, valid, PAIR)) == pytest.approx(left / 2)
    # symmetric: the twin's predictions swapped back against the studies' in the twin's order
    swap = [1, 0, 2]
    assert float(mirror_consistency(twin[:, swap], logits[:, swap], valid, PAIR)) == (
        pytest.approx(left / 2)
    )
    # nothing valid: a zero with a graph
    grad = logits.clone().requires_grad_(True)
    none = mirror_consistency(grad, twin, torch.zeros(1, 3, dtype=torch.bool), PAIR)
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_the_consistency_gradient_pulls_the_two_predictions_together() -> None:
    logits = torch.zeros(1, 3, 3, requires_grad=True)
    twin = torch.zeros(1, 3, 3)
    twin[0, 1, 2] = 2.0  # the twin of target 0 finds it more severe
    mirror_consistency(logits, twin, torch.ones(1, 3, dtype=torch.bool), PAIR).backward()
    assert logits.grad[0, 0, 2] < 0  # raising target 0's "severe" logit lowers the term
    assert float(logits.grad[0, 1].abs().sum()) == 0.0  # target 1 and its twin already agree
