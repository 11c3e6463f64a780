"""The latent reader model and its oracles, at label level (no images)."""

from __future__ import annotations

import numpy as np
import pytest

from spinegrade.data.synthetic import LabelModel, LabelRows, ReaderModel, RealLabels
from spinegrade.data.synthetic.generate import label_scores
from spinegrade.data.synthetic.labels import READER_NOISE, real_labels_frame, weighted_prior
from spinegrade.data.synthetic.source import LabelSource
from spinegrade.metrics import constant_prior_submission


def test_oracles_on_label_draws(label_source: LabelSource) -> None:
    """60 studies: per-target oracle (oracle.csv) < constant prior and, with real rows, joint
    oracle < per-target oracle and < the joint oracle without the study's own row; the latent
    model's label marginal equals the label source's class frequencies."""
    scores = label_scores(60, 0, labels=label_source, reader_noise=READER_NOISE)
    assert scores["oracle_score"] < scores["prior_score"]
    if isinstance(label_source, RealLabels):
        assert scores["oracle_joint_score"] < scores["oracle_score"]
        assert scores["oracle_joint_score"] < scores["oracle_loo_score"]  # its lead: the own row
    else:
        assert scores["oracle_joint_score"] is None and scores["oracle_loo_score"] is None
    model = ReaderModel.from_priors(label_source.priors())
    marginal = model.class_probs(
        np.random.default_rng(1).standard_normal((20000, 1)).repeat(25, 1)
    ).mean(0)
    assert np.allclose(marginal, label_source.priors(), atol=0.01)


def test_weighted_prior_is_the_metrics_constant_prior() -> None:
    """From class shares alone, the same (25, 3) table as `constant_prior_submission` counts
    from the rows (here 300 rows of the bundled model, blanks included)."""
    codes = LabelModel.load().sample(300, np.random.default_rng(2))
    rows = LabelRows(codes, np.arange(300) + 1)
    table = constant_prior_submission(real_labels_frame(rows), [1])
    expected = table[["normal_mild", "moderate", "severe"]].to_numpy()
    assert weighted_prior(rows.priors()) == pytest.approx(expected, abs=1e-12)
    assert not np.allclose(weighted_prior(rows.priors()), rows.priors())  # weights do matter
