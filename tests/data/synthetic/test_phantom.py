"""The phantom: severity is visible where the label point is."""

from __future__ import annotations

import numpy as np

from spinegrade.constants import TARGETS
from spinegrade.data.synthetic import Tissue, make_phantom
from spinegrade.data.synthetic.phantom import narrowing


def test_severity_is_visible_where_the_point_is() -> None:
    """Around each keypoint, in the plane it is graded on, the free space (CSF, foraminal fat)
    shrinks steadily as the latent severity z grows."""

    def free_area(z_value: float, condition: str, plane: str, radius: float) -> float:
        z = np.zeros(25)
        z[TARGETS.index((condition, "l3_l4"))] = z_value
        ph = make_phantom(np.random.default_rng(5), z)
        key = ph.keypoints[(condition, "l3_l4")]
        u, v = ph.spine_axes(ph.spine_coords(key[None])[1][0])
        e1 = u if plane == "sagittal" else np.array([1.0, 0.0, 0.0])
        g = np.linspace(-radius, radius, 81)
        a, b = (m.ravel() for m in np.meshgrid(g, g))
        keep = a**2 + b**2 <= radius**2
        pts = key + a[keep, None] * e1 + b[keep, None] * v
        cell = (g[1] - g[0]) ** 2
        return float(np.isin(ph.tissue_at(pts), [Tissue.CSF, Tissue.FORAMEN_FAT]).sum() * cell)

    for condition, plane, radius in (
        ("spinal_canal_stenosis", "sagittal", 10.0),
        ("left_neural_foraminal_narrowing", "sagittal", 10.0),
        ("right_subarticular_stenosis", "axial", 6.0),
    ):
        areas = [free_area(z, condition, plane, radius) for z in (-1.5, 0.5, 1.2, 2.5)]
        assert areas[0] >= areas[1] > areas[2] > areas[3], (condition, areas)
        assert areas[3] < 0.6 * areas[0], (condition, areas)  # severe is clearly visible
    assert np.all(np.diff(narrowing(np.linspace(-3, 3, 50))) > 0)
