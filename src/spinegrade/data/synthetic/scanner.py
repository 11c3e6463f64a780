"""Series geometry of synthetic studies: where each slice lies, as a real scanner would place it.

- Sagittal stacks: r ~ +y (posterior), c ~ -z (inferior), so IOP ~ [0,1,0, 0,0,-1] and the normal
  r x c ~ -x; slices cover both foramina. The field of view is centred near the L3/L4 canal, as on
  real studies (real spinal points sit at rows 0.3..0.7 of the image).
- Axial T2: r ~ +x (larger column = patient left), c ~ +y; either one continuous stack from above
  L1/L2 to below L5/S1, or 3-5 slices tilted to each disc (all in ONE series, as real data does).
- A few degrees of random rotation, sometimes non-square pixels, sometimes reversed instance order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spinegrade.constants import AXIAL_T2, LEVELS, SAGITTAL_T1, SAGITTAL_T2
from spinegrade.data.synthetic.phantom import Phantom

#: Image sizes, pixel spacing and slice counts by generation size.
SIZES = {
    "small": dict(
        sag_px=(96, 160),
        sag_fov=(220.0, 260.0),
        sag_dx=(1.2, 2.7),
        sag_slices=(9, 15),
        ax_px=(64, 128),
        ax_fov=(120.0, 160.0),
        ax_dx=(0.9, 2.5),
    ),
    "full": dict(
        sag_px=(256, 640),
        sag_fov=(230.0, 360.0),
        sag_dx=(0.5, 0.9),
        sag_slices=(15, 21),
        ax_px=(256, 512),
        ax_fov=(150.0, 220.0),
        ax_dx=(0.4, 0.8),
    ),
}


@dataclass
class Stack:
    """Slices sharing one orientation. `positions` (n, 3) IPP in spatial order along the normal;
    `row_dir` r / `col_dir` c unit (3,); `spacing` = (dy, dx) mm; image `rows` x `cols`."""

    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing: tuple[float, float]
    rows: int
    cols: int
    positions: np.ndarray
    thickness: float

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal r x c (3,)."""
        return np.cross(self.row_dir, self.col_dir)

    def project(self, point: np.ndarray) -> tuple[int, float, float, float]:
        """(slice k, column x, row y, |distance| to the slice plane in mm) of the nearest slice."""
        rel = point - self.positions  # (n, 3)
        dist = rel @ self.normal
        k = int(np.argmin(np.abs(dist)))
        dy, dx = self.spacing
        return (
            k,
            float(rel[k] @ self.row_dir / dx),
            float(rel[k] @ self.col_dir / dy),
            float(abs(dist[k])),
        )


@dataclass
class SeriesPlan:
    """One series: its description, contrast, stacks (spatial order) and instance numbers per
    stack."""

    description: str
    contrast: str
    stacks: list[Stack]
    instance_numbers: list[np.ndarray]

    def project(self, point: np.ndarray) -> tuple[int, float, float, float]:
        """(instance number, x, y, distance mm) of the nearest slice over all stacks."""
        hits = [(st.project(point), nums) for st, nums in zip(self.stacks, self.instance_numbers)]
        (k, x, y, d), nums = min(hits, key=lambda h: h[0][3])
        return int(nums[k]), x, y, d

    @property
    def n_slices(self) -> int:
        return sum(len(st.positions) for st in self.stacks)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation matrix (3, 3) of at most about `max_deg` degrees per axis."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _grid(
    rng: np.random.Generator,
    px: tuple[int, int],
    fov: tuple[float, float],
    dx_range: tuple[float, float],
    full: bool,
) -> tuple[int, int, float, float]:
    """Image (rows, cols) and spacing (dy, dx): a multiple of 16 pixels, field of view in `fov` mm
    as far as `dx_range` allows; square most of the time, sometimes not."""
    n = int(rng.integers(px[0] // 16, px[1] // 16 + 1)) * 16
    lo, hi = max(dx_range[0], fov[0] / n), min(dx_range[1], fov[1] / n)
    dx = rng.uniform(min(lo, hi), max(lo, hi))
    rows, cols, dy = n, n, dx
    if rng.random() < 0.2:  # non-square pixels (real scanners do this)
        dy = dx * rng.uniform(1.05, 1.2)
    if full and rng.random() < 0.15:  # rectangular image
        rows = int(round(n * rng.uniform(1.1, 1.25) / 16)) * 16
    return rows, cols, dy, dx


def _centred_stack(
    centre: np.ndarray,
    r: np.ndarray,
    c: np.ndarray,
    rows: int,
    cols: int,
    dy: float,
    dx: float,
    offsets: np.ndarray,
    thickness: float,
) -> Stack:
    """A stack with orientation (r, c) whose slice centres lie at centre + offset * n (n = r x
    c)."""
    normal = np.cross(r, c)
    corner = -(cols - 1) / 2 * dx * r - (rows - 1) / 2 * dy * c
    positions = centre + corner + offsets[:, None] * normal
    return Stack(r, c, (dy, dx), rows, cols, positions, thickness)


def sagittal_plan(
    ph: Phantom, rng: np.random.Generator, size: str, description: str, contrast: str
) -> SeriesPlan:
    """A sagittal stack over the lumbar spine, covering both foramina."""
    cfg = SIZES[size]
    rot = _rotation(rng, 3.0)
    r, c = rot @ np.array([0.0, 1.0, 0.0]), rot @ np.array([0.0, 0.0, -1.0])
    rows, cols, dy, dx = _grid(rng, cfg["sag_px"], cfg["sag_fov"], cfg["sag_dx"], size == "full")
    n = int(rng.integers(cfg["sag_slices"][0], cfg["sag_slices"][1] + 1))
    thickness = rng.uniform(3.0, 4.5)
    half_span = abs(ph.keypoints[("left_neural_foraminal_narrowing", "l3_l4")][0] - ph.x0) + 9.0
    step = max(thickness + rng.uniform(0.0, 0.5), 2 * half_span / (n - 1))
    canal = ph.keypoints[("spinal_canal_stenosis", "l3_l4")]
    fov_y, fov_z = cols * dx, rows * dy
    centre = canal + np.array(
        [rng.normal(0, 1.5), rng.uniform(-0.06, 0.06) * fov_y, rng.uniform(-0.06, 0.06) * fov_z]
    )
    offsets = (np.arange(n) - (n - 1) / 2) * step
    stack = _centred_stack(centre, r, c, rows, cols, dy, dx, offsets, thickness)
    return SeriesPlan(description, contrast, [stack], [_instance_numbers(rng, n)])


def axial_plan(ph: Phantom, rng: np.random.Generator, size: str) -> SeriesPlan:
    """Axial T2: one continuous stack (half of the studies) or tilted short stacks at each disc."""
    cfg = SIZES[size]
    rows, cols, dy, dx = _grid(rng, cfg["ax_px"], cfg["ax_fov"], cfg["ax_dx"], size == "full")
    thickness = rng.uniform(3.5, 5.0)
    shift = np.array([rng.normal(0, 2.0), rng.normal(-8.0, 4.0), 0.0])
    stacks = []
    if rng.random() < 0.5:
        rot = _rotation(rng, 4.0)
        r, c = rot @ np.array([1.0, 0.0, 0.0]), rot @ np.array([0.0, 1.0, 0.0])
        normal = np.cross(r, c)
        # cover every disc and label point of the study, with a margin of about one disc
        marks = np.array([*ph.keypoints.values(), *ph.disc_centres.values()])
        heights = marks @ normal
        lo, hi = heights.min() - 10.0, heights.max() + 10.0
        centre = ph.disc_centres["l3_l4"] + (shift - (shift @ normal) * normal)
        centre = centre + ((lo + hi) / 2 - centre @ normal) * normal
        step = thickness + rng.uniform(0.0, 0.6)
        n = int(np.ceil((hi - lo) / step)) + 1
        offsets = (np.arange(n) - (n - 1) / 2) * step
        stacks.append(_centred_stack(centre, r, c, rows, cols, dy, dx, offsets, thickness))
    else:
        step = thickness + rng.uniform(-0.5, 0.3)
        for level in reversed(LEVELS):  # sorted inferior -> superior, like the continuous stack
            u = ph.disc_normals[level]
            n_vec = _rotation(rng, 3.0) @ u
            r = np.array([1.0, 0.0, 0.0]) - n_vec[0] * n_vec
            r /= np.linalg.norm(r)
            c = np.cross(n_vec, r)
            n = int(rng.integers(3, 6))
            offsets = (np.arange(n) - (n - 1) / 2) * step + rng.normal(0, 1.0)
            centre = ph.disc_centres[level] + (
                shift - (shift @ n_vec) * n_vec
            )  # shift within the plane
            stacks.append(_centred_stack(centre, r, c, rows, cols, dy, dx, offsets, thickness))
    total = sum(len(s.positions) for s in stacks)
    numbers = _instance_numbers(rng, total)
    split = np.cumsum([len(s.positions) for s in stacks])[:-1]
    return SeriesPlan(AXIAL_T2, "T2", stacks, np.split(numbers, split))


def _instance_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Instance numbers of n slices in spatial order: 1..n, with gaps in about a tenth of series
    (as after deleted localiser images), reversed in about a third."""
    steps = (
        1 + (rng.random(n) < 0.15) * rng.integers(1, 4, n)
        if rng.random() < 0.1
        else np.ones(n, dtype=np.int64)
    )
    numbers = np.cumsum(steps)
    return numbers[::-1].copy() if rng.random() < 0.35 else numbers


def plan_series(
    ph: Phantom, rng: np.random.Generator, size: str, counts: tuple[int, int, int]
) -> list[SeriesPlan]:
    """Series of one study: `counts` = how many (Sagittal T1, Sagittal T2/STIR, Axial T2)."""
    plans = []
    for _ in range(counts[0]):
        plans.append(sagittal_plan(ph, rng, size, SAGITTAL_T1, "T1"))
    for _ in range(counts[1]):
        plans.append(
            sagittal_plan(ph, rng, size, SAGITTAL_T2, "STIR" if rng.random() < 0.2 else "T2")
        )
    for _ in range(counts[2]):
        plans.append(axial_plan(ph, rng, size))
    return plans
