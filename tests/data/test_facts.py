"""Dataset facts for inspection: label counts and correlations, spatial slice order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spinegrade.constants import TARGETS
from spinegrade.data.facts import relative_slice_index, severity_counts, target_correlation


def test_relative_index_follows_space_not_instance_numbers() -> None:
    slices = pd.DataFrame(
        {"study_id": 1, "series_id": 1, "instance_number": [3, 2, 1], "position": [10.0, 5.0, 0.0]}
    )
    assert relative_slice_index(slices).tolist() == [1.0, 0.5, 0.0]


def test_counts_and_correlation_on_known_labels() -> None:
    sev = ["normal_mild", "moderate", "severe", np.nan]
    labels = pd.DataFrame({"study_id": range(12)})
    for k, (c, lv) in enumerate(TARGETS):
        labels[f"{c}_{lv}"] = [sev[(i + (k % 2)) % 3] for i in range(12)]
    labels.loc[0, "spinal_canal_stenosis_l1_l2"] = np.nan
    counts = severity_counts(labels)
    assert counts.loc[("spinal_canal_stenosis", "l1_l2")].tolist() == [3, 4, 4, 1]
    corr = target_correlation(labels)
    assert corr.shape == (25, 25)
    assert corr.loc["spinal_canal_stenosis_l2_l3", "spinal_canal_stenosis_l4_l5"] == pytest.approx(
        1.0
    )
    assert corr.loc["spinal_canal_stenosis_l2_l3", "spinal_canal_stenosis_l3_l4"] < 0
