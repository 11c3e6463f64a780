"""The grader's loss: the challenge metric, made differentiable, on a batch of whole studies.

`grade_loss` = (spinal + foraminal + subarticular + w * any_severe_spinal) / (3 + w), where each
group term is the cross-entropy weighted 1/2/4 by the true class and normalised by the sum of
weights (sklearn's weighted log loss), and `any_severe_spinal` is the weighted binary log loss of
"any labelled spinal level severe" against the max severe probability over those levels, weighted
by the largest of their weights, exactly as `spinegrade.metrics`. With w = 1 the loss of a batch is
the challenge score of that batch. Blank labels (-1) are masked; a term without rows is left out.

`mirror_consistency` is an optional regulariser (`grade.consistency_weight`): the symmetric KL
divergence between the predictions for a study and, swapped back, those for its left/right-mirrored
twin; it needs no labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from spinegrade.constants import CONDITION_GROUPS, SEVERITIES, SEVERITY_WEIGHTS, TARGETS
from spinegrade.grade.augment import mirror_index

Targets = Sequence[tuple[str, str]]


def group_targets(targets: Targets = TARGETS) -> dict[str, list[int]]:
    """Indices into `targets` of each condition group, in `CONDITION_GROUPS` order (a group
    without targets has an empty list)."""
    return {
        g: [i for i, (c, _) in enumerate(targets) if c in members]
        for g, members in CONDITION_GROUPS.items()
    }


#: Target indices (into TARGETS) of each condition group, in CONDITION_GROUPS order.
GROUP_TARGETS: dict[str, list[int]] = group_targets()
SPINAL_TARGETS: list[int] = GROUP_TARGETS["spinal"]
SEVERE = SEVERITIES.index("severe")
#: Probabilities are clamped to [eps, 1 - eps] in the any-severe term (float32-safe).
EPS = 1e-7


def grade_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    any_severe_weight: float = 1.0,
    targets: Targets = TARGETS,
) -> torch.Tensor:
    """Scalar loss of `logits (b, t, 3)` against `labels (b, t)` int (0/1/2, -1 = blank), the `t`
    columns being `targets` (default the 25 `TARGETS`); groups without targets are left out."""
    terms = [t for t in group_terms(logits, labels, targets).values() if t is not None]
    weights = [1.0] * len(terms)
    any_term = any_severe_term(logits, labels, targets)
    if any_term is not None and any_severe_weight > 0:
        terms.append(any_term)
        weights.append(any_severe_weight)
    if not terms:
        return logits.sum() * 0.0
    return sum(w * t for w, t in zip(weights, terms)) / sum(weights)


def group_terms(
    logits: torch.Tensor, labels: torch.Tensor, targets: Targets = TARGETS
) -> dict[str, torch.Tensor | None]:
    """Weighted 3-class log loss of each condition group (None where the group has no labelled
    row)."""
    class_w = torch.tensor(SEVERITY_WEIGHTS, dtype=logits.dtype, device=logits.device)
    logp = F.log_softmax(logits.float(), dim=-1)
    out: dict[str, torch.Tensor | None] = {}
    for group, idx in group_targets(targets).items():
        y = labels[:, idx].reshape(-1)
        lp = logp[:, idx].reshape(-1, logp.shape[-1])
        keep = y >= 0
        if not bool(keep.any()):
            out[group] = None
            continue
        w = class_w[y[keep]]
        nll = -lp[keep].gather(1, y[keep, None]).squeeze(1)
        out[group] = (w * nll).sum() / w.sum()
    return out


def any_severe_term(
    logits: torch.Tensor, labels: torch.Tensor, targets: Targets = TARGETS
) -> torch.Tensor | None:
    """Weighted binary log loss of any-severe-spinal over the batch's studies (None if no study has
    a labelled spinal level, or `targets` hold none)."""
    spinal = group_targets(targets)["spinal"]
    if not spinal:
        return None
    y = labels[:, spinal]  # (b, 5)
    p_severe = F.softmax(logits[:, spinal].float(), dim=-1)[..., SEVERE]  # (b, 5)
    labelled = y >= 0
    has = labelled.any(dim=1)
    if not bool(has.any()):
        return None
    class_w = torch.tensor(SEVERITY_WEIGHTS, dtype=p_severe.dtype, device=p_severe.device)
    target = ((y == SEVERE) & labelled).any(dim=1).to(p_severe.dtype)
    weight = torch.where(labelled, class_w[y.clamp(min=0)], torch.zeros_like(p_severe)).amax(dim=1)
    p = torch.where(labelled, p_severe, torch.zeros_like(p_severe)).amax(dim=1).clamp(EPS, 1 - EPS)
    bce = -(target * torch.log(p) + (1 - target) * torch.log1p(-p))
    return (weight[has] * bce[has]).sum() / weight[has].sum()


def mirror_consistency(
    logits: torch.Tensor,
    twin_logits: torch.Tensor,
    valid: torch.Tensor,
    targets: Targets = TARGETS,
) -> torch.Tensor:
    """Mean symmetric KL divergence between the predictions for the studies and for their mirrored
    twins, over the targets that have a crop.

    `logits (b, t, 3)` are the studies', `twin_logits (b, t, 3)` the mirrored twins' (as
    `augment.mirror_sample` makes them: slot `mirror_index(targets)[i]` of a twin holds the mirror
    of target `i`'s crop), `valid (b, t)` bool which targets of the studies have a crop. With
    `p` the softmax of `logits[:, i]` and `q` that of the twin's slot for `i`, each valid target
    contributes `(KL(p || q) + KL(q || p)) / 2 = sum_k (p_k - q_k)(log p_k - log q_k) / 2`; the
    result is a scalar, 0 for a mirror-equivariant model (and, with a graph, when nothing is
    valid). Gradients flow into both predictions.
    """
    index = torch.as_tensor(mirror_index(targets), device=twin_logits.device)
    logp = F.log_softmax(logits.float(), dim=-1)
    logq = F.log_softmax(twin_logits.float()[:, index], dim=-1)  # swapped back to `targets` order
    sym = ((logp.exp() - logq.exp()) * (logp - logq)).sum(-1) / 2  # (b, t)
    if not bool(valid.any()):
        return sym.sum() * 0.0
    return sym[valid].mean()
