"""The mirror-consistency term in the grader's training (`grade.consistency_weight`).

Off (the default) the loss is exactly the plain `grade_loss` and the items carry nothing more; on,
each item carries its mirrored twin (the mirror of its very crops), one forward pass grades both,
the loss adds the weighted term and names both terms, and training steps lower the term.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from spinegrade.config import Config, GradeConfig, load_config
from spinegrade.constants import TARGETS
from spinegrade.data.tables import load_tables
from spinegrade.errors import ConfigError
from spinegrade.grade.augment import MIRROR_INDEX
from spinegrade.grade.dataset import GradeDataset
from spinegrade.grade.loss import grade_loss, mirror_consistency
from spinegrade.grade.train import (
    augment_params,
    build_model,
    check_consistency,
    consistency_set,
    crop_params,
    fit_grader,
    forward,
    iter_studies,
    loss_function,
)
from spinegrade.training.loop import StepConfig, train_step

#: A small grader on small crops (no dropout, so that a train-mode pass is deterministic).
SMALL = [
    "data.num_workers=0",
    "device=cpu",
    "grade.backbone=test_resnet",
    "grade.crop_mm=24",
    "grade.crop_px=16",
    "grade.dim=16",
    "grade.dropout=0",
    "grade.optim.batch_size=2",
    "grade.optim.epochs=2",
    "grade.optim.warmup_epochs=0",
]


def _cfg(*more: str) -> Config:
    return load_config("tiny", [*SMALL, *more])


def _dataset(grade_data: Path, cfg: Config, ids: list[int], augmented: bool) -> GradeDataset:
    tables = load_tables(grade_data)
    studies = iter_studies(grade_data, ids, failed={}, progress=False)
    augment = augment_params(cfg.grade) if augmented else None
    return GradeDataset.from_studies(
        studies, tables.coordinates, tables.labels, crop_params(cfg.grade), augment
    )


def _slot(condition: str, level: str) -> int:
    return TARGETS.index((condition, level))


def test_a_twin_is_the_mirror_of_the_very_crops_of_its_item(grade_data: Path) -> None:
    data = _dataset(grade_data, _cfg(), [9000], augmented=True)
    plain, item = data[0], data.with_twins()[0]  # the same (first) draw of the augmentation
    assert set(plain) == {"crops", "valid", "labels"}
    for key in plain:
        assert torch.equal(plain[key], item[key]), key  # the twin changes nothing else
    twin = item["twin_crops"]
    left, right = (
        _slot("left_neural_foraminal_narrowing", "l4_l5"),
        _slot("right_neural_foraminal_narrowing", "l4_l5"),
    )
    assert torch.equal(twin[right], item["crops"][left].flip(0))  # sagittal: channels reversed
    left, right = (
        _slot("left_subarticular_stenosis", "l3_l4"),
        _slot("right_subarticular_stenosis", "l3_l4"),
    )
    assert torch.equal(twin[left], item["crops"][right].flip(-1))  # axial: columns flipped
    assert torch.equal(item["twin_valid"], item["valid"][MIRROR_INDEX])


def test_by_default_the_loss_is_the_plain_grade_loss_bitwise(grade_data: Path) -> None:
    cfg = GradeConfig()
    assert cfg.consistency_weight == 0.0
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 25, 3, generator=g)
    labels = torch.randint(-1, 3, (2, 25), generator=g)
    out = loss_function(cfg)(logits, {"labels": labels})
    assert isinstance(out, torch.Tensor)
    assert torch.equal(out, grade_loss(logits, labels, cfg.any_severe_weight))
    data = _dataset(grade_data, _cfg(), [9000], augmented=False)
    assert consistency_set(cfg, data) is data  # no twins: no second pass, nothing more to load


def test_one_pass_grades_the_studies_and_their_twins(grade_data: Path) -> None:
    cfg = _cfg("grade.consistency_weight=0.5")
    data = consistency_set(cfg.grade, _dataset(grade_data, cfg, [9000, 9001], augmented=False))
    batch = default_collate([data[0], data[1]])
    torch.manual_seed(0)
    model = build_model(cfg.grade).eval()
    passes = []
    model.backbone.register_forward_hook(lambda *_: passes.append(1))
    with torch.no_grad():
        logits, twin = forward(model, batch)
        assert len(passes) == 1
        assert torch.allclose(logits, model(batch["crops"], batch["valid"]), atol=1e-5)
        assert torch.allclose(twin, model(batch["twin_crops"], batch["twin_valid"]), atol=1e-5)
        loss, parts = loss_function(cfg.grade)((logits, twin), batch)
    assert torch.equal(parts["task"], grade_loss(logits, batch["labels"]))
    assert torch.equal(parts["consistency"], mirror_consistency(logits, twin, batch["valid"]))
    assert float(parts["consistency"]) > 0  # an untrained model is not mirror-equivariant
    assert float(loss) == pytest.approx(float(parts["task"] + 0.5 * parts["consistency"]))


def _term_after_steps(grade_data: Path, weight: float, steps: int = 12) -> tuple[float, float]:
    """(term before, term after) `steps` training steps on one toy batch of two studies."""
    cfg = _cfg(f"grade.consistency_weight={weight}")
    data = _dataset(grade_data, cfg, [9000, 9001], augmented=False).with_twins()
    batch = default_collate([data[0], data[1]])
    torch.manual_seed(0)
    model = build_model(cfg.grade).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    step = StepConfig(loss_function(cfg.grade), forward, 5.0, torch.device("cpu"), False)
    first = train_step(model, batch, optimizer, step)[1]["consistency"]  # before the update
    for _ in range(steps - 1):
        train_step(model, batch, optimizer, step)
    with torch.no_grad():
        logits, twin = forward(model, batch)
    return first, float(mirror_consistency(logits, twin, batch["valid"]))


def test_training_steps_lower_the_consistency_term(grade_data: Path) -> None:
    """From the same start, the term ends lower the more it weighs (weight 0: the task alone)."""
    torch.set_num_threads(1)
    (start, alone), (_, some), (_, much) = (_term_after_steps(grade_data, w) for w in (0, 1, 10))
    assert much < some < alone
    assert much < 0.2 * start and much < 0.2 * alone, (start, alone, some, much)


def test_fit_grader_with_the_term_records_both_terms(grade_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = _cfg("grade.consistency_weight=0.5")
    train = _dataset(grade_data, cfg, [9000, 9001, 9002, 9003], augmented=True)
    val = _dataset(grade_data, cfg, [9004], augmented=False)
    torch.manual_seed(0)
    path = fit_grader(build_model(cfg.grade), train, val, tmp_path, cfg, progress=False)
    history = torch.load(path, weights_only=False)["history"]
    for record in history:
        assert record["train_loss"] == pytest.approx(
            record["train_task"] + 0.5 * record["train_consistency"], rel=1e-5
        )
        assert record["train_consistency"] > 0 and "val_loss" in record


def test_the_weight_is_checked() -> None:
    with pytest.raises(ConfigError, match="expected 0"):
        check_consistency(_cfg("grade.consistency_weight=-1").grade)
    one_side = [t for t in TARGETS if t[0] == "left_neural_foraminal_narrowing"]
    check_consistency(_cfg().grade, one_side)  # off: nothing to check
    with pytest.raises(ConfigError, match="both sides"):
        check_consistency(_cfg("grade.consistency_weight=0.5").grade, one_side)
    check_consistency(_cfg("grade.consistency_weight=0.5").grade)  # the 25 targets: fine
