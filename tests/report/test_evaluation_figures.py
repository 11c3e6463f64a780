"""The evaluation figures draw what they are given and write PNGs (also with empty inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spinegrade.report.evaluation_figures import (
    confusion_grid,
    error_distributions,
    reliability_diagram,
)


def test_each_figure_is_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    errors = {"model": rng.gamma(2, 2, 200), "baseline": np.r_[rng.gamma(4, 3, 199), np.nan]}
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet([2, 1, 1], 300)
    paths = [
        error_distributions(errors, tmp_path / "e.png", unit="px", marks=(3, 5, 10)),
        confusion_grid({"a": np.eye(3) * 5, "b": np.ones((3, 3))}, tmp_path / "c.png"),
        reliability_diagram({"raw": (labels, probs)}, tmp_path / "r.png"),
        error_distributions({"none": np.array([np.nan])}, tmp_path / "empty.png", unit="px"),
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300
