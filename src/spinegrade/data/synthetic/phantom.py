"""A 3D analytic lumbar spine in patient LPS millimetres, evaluated at any world points.

Every study gets one random :class:`Phantom`; each of its series samples the *same* anatomy at the
world positions of its own pixels, so the series agree with each other and a label coordinate is the
projection of a known 3D point (:attr:`Phantom.keypoints`).

Coordinates. The lumbar lordosis is a circular arc (radius `R`, centre posterior to the spine) in
the mid-sagittal plane x = x0. A world point p maps to *spine coordinates* (a, s, b):
a = x - x0 (lateral, + = patient left), s = arc length along the centreline (+ = superior),
b = signed distance from the centreline (+ = posterior). The sacrum is tilted further than the arc
(sacral slope), so it has its own straight frame (a, s', b') hinged at the posterior edge of the
L5/S1 disc. Structures are superellipsoids (:class:`Blob`) in one of these frames, painted in order
with soft (anti-aliased) edges, each with a tissue class; a contrast table turns tissues into
signal.

Severity. Each of the 25 targets has a latent severity z (see `labels.py`); :func:`narrowing` maps
it
to a continuous encroachment g in [0, 0.8] at the place the label points to: a posterior disc bulge
and ligamentum flavum thickening squeeze the canal at that disc (spinal canal stenosis), dark tissue
replaces the fat around the exiting root in that side's foramen (neural foraminal narrowing), and
facet/ligament hypertrophy fills that side's lateral recess around the traversing root (subarticular
stenosis). Neighbouring z look alike; the effect grows smoothly through the label thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from spinegrade.constants import LEVELS, TARGETS


class Tissue(IntEnum):
    """Tissue classes (painted label values)."""

    AIR = 0
    FAT = 1  #: subcutaneous fat
    SOFT = 2  #: abdominal contents
    MUSCLE = 3
    VESSEL = 4  #: aorta / vena cava (flow void)
    CORTEX = 5  #: cortical bone, endplates
    MARROW = 6  #: vertebral body marrow
    POST_BONE = 7  #: posterior elements (pedicles, laminae, facets, spinous processes)
    ANNULUS = 8  #: disc annulus and posterior disc bulge
    NUCLEUS = 9
    EPIDURAL_FAT = 10
    CSF = 11
    CORD = 12
    NERVE = 13  #: cauda equina, exiting and traversing roots
    LIGAMENT = 14  #: ligamentum flavum, hypertrophied facet capsule, foraminal narrowing tissue
    FORAMEN_FAT = 15


#: Signal of each tissue (index = Tissue value) per contrast, on a 0..1 scale.
# fmt: off
CONTRASTS: dict[str, np.ndarray] = {
    # fmt: off
    #                AIR  FAT   SOFT  MUSC  VESS  CORT  MARR  POST
    #                ANNU  NUCL  EPI   CSF   CORD  NERV  LIG   FFAT
    "T1": np.array([0.0, 0.92, 0.42, 0.33, 0.08, 0.06, 0.72, 0.58,
                    0.30, 0.36, 0.88, 0.14, 0.38, 0.36, 0.10, 0.90]),
    "T2": np.array([0.0, 0.72, 0.40, 0.22, 0.06, 0.05, 0.48, 0.38,
                    0.16, 0.78, 0.66, 1.00, 0.34, 0.30, 0.07, 0.68]),
    "STIR": np.array([0.0, 0.08, 0.38, 0.20, 0.05, 0.04, 0.18, 0.14,
                      0.20, 0.80, 0.08, 1.00, 0.34, 0.30, 0.07, 0.08]),
    # fmt: on
}
# fmt: on
SPINE, SACRUM, WORLD = 0, 1, 2  #: frames; WORLD: (a, s, b) = (x - x0, z, y)
#: Narrowing at the most severe latent values (fraction of the space taken away).
MAX_NARROWING = 0.8


def narrowing(z: np.ndarray | float) -> np.ndarray:
    """Latent severity z -> encroachment g in (0, MAX_NARROWING): smooth, steepest near the
    moderate/severe thresholds (z about 0.7..1.9), nearly 0 for z < -1."""
    return MAX_NARROWING / (1.0 + np.exp(-2.2 * (np.asarray(z, dtype=np.float64) - 1.1)))


@dataclass(frozen=True)
class Blob:
    """A superellipsoid |da/ra|^p + |ds/rs|^p + |db/rb|^p <= 1 in frame SPINE or SACRUM, optionally
    clipped to s in `s_range`; painted as `tissue`."""

    center: tuple[float, float, float]  #: (a, s, b) mm
    radii: tuple[float, float, float]
    tissue: Tissue
    p: float = 2.0
    frame: int = SPINE
    s_range: tuple[float, float] | None = None
    invert: bool = False  #: paint the outside instead (skin surface, fat shell)

    def bounds(self) -> np.ndarray:
        """(3, 2) box [(a_lo, a_hi), (s_lo, s_hi), (b_lo, b_hi)] containing the blob."""
        c, r = np.asarray(self.center), np.asarray(self.radii)
        if self.invert:
            return np.array([[-np.inf, np.inf]] * 3)
        box = np.stack([c - r, c + r], axis=1)
        if self.s_range is not None:
            box[1] = [max(box[1, 0], self.s_range[0]), min(box[1, 1], self.s_range[1])]
        return box

    def distance(self, a: np.ndarray, s: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Approximate signed distance in mm (negative inside), arrays of shape (n,)."""
        r = self.radii
        q = (
            np.abs((a - self.center[0]) / r[0]) ** self.p
            + np.abs((s - self.center[1]) / r[1]) ** self.p
            + np.abs((b - self.center[2]) / r[2]) ** self.p
        ) ** (1.0 / self.p)
        d = (q - 1.0) * min(r)
        if self.s_range is not None:
            d = np.maximum(d, np.maximum(self.s_range[0] - s, s - self.s_range[1]))
        return -d if self.invert else d


@dataclass
class Phantom:
    """One study's anatomy. Geometry: arc centre `(yc, zc)`, radius `R`, midline `x0`; sacral frame
    origin `sac_origin` with unit axes `sac_u` (superior), `sac_v` (posterior) in world (3,)."""

    x0: float
    yc: float
    zc: float
    R: float
    sac_origin: np.ndarray
    sac_u: np.ndarray
    sac_v: np.ndarray
    blobs: list[Blob]
    keypoints: dict[tuple[str, str], np.ndarray]  #: (condition, level) -> world point (3,)
    disc_centres: dict[str, np.ndarray]  #: level -> world point (3,) at the disc centre
    disc_normals: dict[str, np.ndarray]  #: level -> unit superior axis of the disc (3,)
    severity: np.ndarray  #: (25,) latent z in TARGETS order
    texture: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  #: (k, 4) waves

    # --- coordinates ---------------------------------------------------------------------------
    def spine_coords(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points (n, 3) -> (a, s, b) arrays (n,) in the lumbar arc frame."""
        a = points[:, 0] - self.x0
        dy, dz = points[:, 1] - self.yc, points[:, 2] - self.zc
        return a, self.R * np.arctan2(dz, -dy), self.R - np.hypot(dy, dz)

    def sacral_coords(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points (n, 3) -> (a, s', b') in the sacral frame."""
        rel = points - self.sac_origin
        return points[:, 0] - self.x0, rel @ self.sac_u, rel @ self.sac_v

    def spine_to_world(self, a: float, s: float, b: float) -> np.ndarray:
        """Inverse of :meth:`spine_coords` for one point -> (3,)."""
        theta, d = s / self.R, self.R - b
        return np.array([self.x0 + a, self.yc - d * np.cos(theta), self.zc + d * np.sin(theta)])

    def spine_axes(self, s: float) -> tuple[np.ndarray, np.ndarray]:
        """Unit superior (u) and posterior (v) axes (3,) of the arc frame at arc length s."""
        theta = s / self.R
        return np.array([0.0, np.sin(theta), np.cos(theta)]), np.array(
            [0.0, np.cos(theta), -np.sin(theta)]
        )

    # --- painting ------------------------------------------------------------------------------
    def paint(
        self, points: np.ndarray, values: np.ndarray, edge_mm: float = 0.7, texture: bool = True
    ) -> np.ndarray:
        """Signal at world points (n, 3) for tissue `values` (16,) -> float32 (n,), soft edges.

        Blobs are composited in order: out = out * (1 - alpha) + value * alpha, alpha a linear
        ramp of the signed distance over `edge_mm` (so sub-pixel changes stay visible).
        """
        out = np.full(len(points), values[Tissue.AIR], dtype=np.float32)
        for blob, idx, a, s, b in self._visits(points):
            alpha = np.clip(0.5 - blob.distance(a, s, b) / edge_mm, 0.0, 1.0).astype(np.float32)
            out[idx] += (np.float32(values[blob.tissue]) - out[idx]) * alpha
        return out * self.texture_at(points) if texture else out

    def tissue_at(self, points: np.ndarray) -> np.ndarray:
        """Tissue class (n,) int at world points (n, 3): the last blob that contains each point."""
        out = np.full(len(points), int(Tissue.AIR), dtype=np.int16)
        for blob, idx, a, s, b in self._visits(points):
            out[idx[blob.distance(a, s, b) <= 0]] = int(blob.tissue)
        return out

    def _visits(self, points: np.ndarray):  # type: ignore[no-untyped-def]
        """Yield (blob, indices, a, s, b) for the points inside each blob's bounding box (1 mm
        margin). Blobs whose box misses the points' extent are skipped without touching them."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        world = (points[:, 0] - self.x0, points[:, 2], points[:, 1])
        frames = (self.spine_coords(points), self.sacral_coords(points), world)
        extent = np.array(
            [[[c.min() - 1.0, c.max() + 1.0] for c in f] for f in frames]
        )  # (3 frames, 3, 2)
        boxes = self._boxes()
        ext = extent[[blob.frame for blob in self.blobs]]  # (blobs, 3, 2)
        hit = np.all((boxes[:, :, 0] <= ext[:, :, 1]) & (boxes[:, :, 1] >= ext[:, :, 0]), axis=1)
        # points sorted by s per frame: a blob only looks at the window of its s-range
        order = [np.argsort(f[1], kind="stable") for f in frames]
        s_sorted = [f[1][o] for f, o in zip(frames, order)]
        for blob, box in zip(np.asarray(self.blobs, dtype=object)[hit], boxes[hit]):
            a, s, b = frames[blob.frame]
            lo, hi = box[:, 0] - 1.0, box[:, 1] + 1.0
            i0, i1 = np.searchsorted(s_sorted[blob.frame], [lo[1], hi[1]])
            cand = order[blob.frame][i0:i1]
            ca, cb = a[cand], b[cand]
            idx = cand[(ca >= lo[0]) & (ca <= hi[0]) & (cb >= lo[2]) & (cb <= hi[2])]
            if len(idx):
                yield blob, idx, a[idx], s[idx], b[idx]

    def _boxes(self) -> np.ndarray:
        """Bounding boxes of all blobs, (blobs, 3, 2), computed once."""
        if getattr(self, "_box_cache", None) is None or len(self._box_cache) != len(self.blobs):
            self._box_cache = np.stack([blob.bounds() for blob in self.blobs])
        return self._box_cache

    def texture_at(self, points: np.ndarray) -> np.ndarray:
        """Smooth multiplicative tissue texture (n,) float32 from a few plane waves in world mm."""
        if not len(self.texture):
            return np.ones(len(points), dtype=np.float32)
        phase = points.astype(np.float32) @ self.texture[:, :3].T.astype(np.float32) + self.texture[
            :, 3
        ].astype(np.float32)
        return 1.0 + np.float32(0.03) * np.sin(phase).sum(axis=1)


@dataclass(frozen=True)
class _Dims:
    """Sizes of one spine (mm). Arrays of 7 run upward: bodies L5, L4, L3, L2, L1, T12, T11 and the
    discs below each (L5/S1 .. L1/L2, T12/L1, T11/T12). `edges` (15,) are arc lengths s: disc i
    spans
    edges[2i]..edges[2i+1], body i edges[2i+1]..edges[2i+2]; s = 0 is the apex of the lordosis."""

    k: float  #: overall size factor
    R: float  #: lordosis radius
    x0: float  #: midline
    edges: np.ndarray
    ra: np.ndarray  #: body half-widths (7,)
    rb: np.ndarray  #: body half-depths (7,)
    canal_d: float  #: canal AP depth
    canal_w: float  #: canal LR width
    epi: float = 1.0  #: epidural fat behind bodies and discs

    @property
    def s_sacrum(self) -> float:
        return float(self.edges[0])

    @property
    def rb_mean(self) -> float:
        return float(self.rb[:5].mean())

    @property
    def b_canal(self) -> float:
        """b of the canal's centre line."""
        return self.rb_mean + self.epi + self.canal_d / 2

    @property
    def b_back(self) -> float:
        """b of the posterior canal wall."""
        return self.rb_mean + self.epi + self.canal_d

    def body(self, i: int) -> tuple[float, float]:
        """(centre s, height) of body i."""
        lo, hi = self.edges[2 * i + 1], self.edges[2 * i + 2]
        return (lo + hi) / 2, hi - lo

    def disc(self, i: int) -> tuple[float, float]:
        """(centre s, height) of disc i (below body i)."""
        lo, hi = self.edges[2 * i], self.edges[2 * i + 1]
        return (lo + hi) / 2, hi - lo


_BIG = 1e4  #: radius along s of blobs that run the whole length (tubes)


def make_phantom(rng: np.random.Generator, severity: np.ndarray) -> Phantom:
    """A random lumbar spine with the latent severities `severity` (25,) (TARGETS order) rendered.

    Builds, in paint order: soft tissues and skin, posterior elements, discs, bodies and pedicles,
    sacrum, the canal and its contents, then per level the recesses, stenoses and foramina.
    """
    dims = _draw_dims(rng)
    phantom = _place(rng, dims, severity)
    blobs = (
        _soft_tissue(rng, dims, phantom)
        + _posterior_elements(dims)
        + _bodies_and_discs(dims)
        + _canal(rng, dims)
    )
    blobs += _levels(dims, phantom, dict(zip(TARGETS, narrowing(severity))))
    phantom.blobs = blobs
    waves = rng.normal(size=(4, 3))
    waves *= (2 * np.pi / rng.uniform(6.0, 30.0, (4, 1))) / np.linalg.norm(
        waves, axis=1, keepdims=True
    )
    phantom.texture = np.column_stack([waves, rng.uniform(0, 2 * np.pi, 4)])
    assert set(phantom.keypoints) == set(TARGETS)
    return phantom


def _draw_dims(rng: np.random.Generator) -> _Dims:
    """Random sizes: bodies, discs (L4/L5 tallest), canal; the arc apex near the L3/L4 disc."""
    k = rng.uniform(0.92, 1.08)
    R = rng.uniform(170.0, 270.0)
    x0 = rng.normal(0.0, 4.0)
    body_h = k * np.array(
        [rng.uniform(24, 28), *rng.uniform(25, 30, 4), rng.uniform(22, 26), rng.uniform(20, 24)]
    )
    disc_h = k * np.array(
        [
            rng.uniform(7, 10),
            rng.uniform(9, 12),
            rng.uniform(8.5, 11.5),
            rng.uniform(8, 10.5),
            rng.uniform(7, 9.5),
            rng.uniform(5.5, 7.5),
            rng.uniform(5, 6.5),
        ]
    )
    edges = np.concatenate([[0.0], np.cumsum(np.ravel(np.column_stack([disc_h, body_h])))])
    edges = edges - ((edges[4] + edges[5]) / 2 + rng.uniform(-15.0, 15.0))
    ra = k * (np.array([25.0, 24.0, 23.0, 22.0, 21.0, 20.0, 19.0]) + rng.normal(0, 1.0, 7))
    rb = k * (np.array([17.0, 17.0, 16.5, 16.0, 15.5, 15.0, 14.5]) + rng.normal(0, 0.6, 7))
    canal_d, canal_w = k * rng.uniform(14.0, 17.0), k * rng.uniform(20.0, 24.0)
    return _Dims(k=k, R=R, x0=x0, edges=edges, ra=ra, rb=rb, canal_d=canal_d, canal_w=canal_w)


def _place(rng: np.random.Generator, d: _Dims, severity: np.ndarray) -> Phantom:
    """The phantom's frames: arc apex at a random world position; the sacral frame hinged at the
    posterior edge of the L5/S1 disc bottom and tilted by a further 10-22 degrees."""
    phantom = Phantom(
        x0=d.x0,
        yc=0.0,
        zc=0.0,
        R=d.R,
        sac_origin=np.zeros(3),
        sac_u=np.zeros(3),
        sac_v=np.zeros(3),
        blobs=[],
        keypoints={},
        disc_centres={},
        disc_normals={},
        severity=np.asarray(severity, float),
    )
    y_apex, z_apex = rng.normal(0.0, 8.0), rng.normal(-10.0, 10.0)
    phantom.yc, phantom.zc = y_apex + d.R, z_apex
    kappa = np.deg2rad(rng.uniform(10.0, 22.0))
    u0, v0 = phantom.spine_axes(d.s_sacrum)
    phantom.sac_u = np.cos(kappa) * u0 - np.sin(kappa) * v0
    phantom.sac_v = np.sin(kappa) * u0 + np.cos(kappa) * v0
    hinge = phantom.spine_to_world(0.0, d.s_sacrum, d.rb[0])
    phantom.sac_origin = hinge - d.rb[0] * phantom.sac_v
    return phantom


def _soft_tissue(rng: np.random.Generator, d: _Dims, phantom: Phantom) -> list[Blob]:
    """Abdomen, paraspinal and psoas muscles, aorta and vena cava, subcutaneous fat and skin."""
    k, e = d.k, d.edges
    fat_t = rng.uniform(8.0, 30.0)
    skin_b = d.b_back + rng.uniform(40.0, 60.0) + fat_t
    half_w, half_d = rng.uniform(140.0, 180.0), rng.uniform(105.0, 140.0)
    # the back is straighter than the spine: a plain elliptic cylinder along z (WORLD frame)
    body_c = phantom.spine_to_world(0.0, e[5], skin_b)[1] - half_d
    top = e[-1] + 40.0
    blobs = [Blob((0, 0, body_c), (half_w - fat_t, _BIG, half_d - fat_t), Tissue.SOFT, frame=WORLD)]
    for side in (-1, 1):
        blobs.append(
            Blob(
                (side * 27 * k, 0, (d.b_back + skin_b - fat_t) / 2 + 3),
                (24 * k, _BIG, (skin_b - fat_t - d.b_back) / 2 + 6),
                Tissue.MUSCLE,
            )
        )
        blobs.append(
            Blob(
                (side * 38 * k, e[3], 0.0),
                (14 * k, e[9] - e[3], 14 * k),
                Tissue.MUSCLE,
                s_range=(d.s_sacrum - 30, e[9]),
            )
        )
    blobs.append(
        Blob((10 * k, 0, -d.rb_mean - 12), (8, _BIG, 8), Tissue.VESSEL, s_range=(e[2], top))
    )
    blobs.append(
        Blob((-14 * k, 0, -d.rb_mean - 11), (9, _BIG, 7), Tissue.VESSEL, s_range=(e[2], top))
    )
    blobs += [
        Blob(
            (0, 0, body_c),
            (half_w - fat_t, _BIG, half_d - fat_t),
            Tissue.FAT,
            frame=WORLD,
            invert=True,
        ),
        Blob((0, 0, body_c), (half_w, _BIG, half_d), Tissue.AIR, frame=WORLD, invert=True),
    ]
    return blobs


def _posterior_elements(d: _Dims) -> list[Blob]:
    """Articular columns, laminae and spinous processes per vertebra; sacral plate and alae."""
    blobs = []
    for i in range(7):
        mid, h = d.body(i)
        for side in (-1, 1):
            blobs.append(
                Blob(
                    (side * (d.canal_w / 2 + 7), mid + 2, d.b_back + 4),
                    (8.0, h / 2 + 4, 9.0),
                    Tissue.POST_BONE,
                    p=3,
                )
            )
        blobs.append(
            Blob(
                (0, mid + 1, d.b_back + 3.5),
                (d.canal_w / 2 + 4, h / 2 - 1, 3.5),
                Tissue.POST_BONE,
                p=4,
            )
        )
        blobs.append(
            Blob((0, mid - 1, d.b_back + 22), (3.5, h * 0.32, 18.0), Tissue.POST_BONE, p=3)
        )
    rb0, ra0 = d.rb[0], d.ra[0]
    blobs.append(
        Blob(
            (0, -35, rb0 + d.epi + d.canal_d * 0.8 + 5),
            (d.canal_w / 2 + 14, 35, 5),
            Tissue.POST_BONE,
            p=4,
            frame=SACRUM,
        )
    )
    for side in (-1, 1):
        blobs.append(
            Blob(
                (side * (ra0 + 12), -18, rb0 * 0.2),
                (20, 18, rb0 * 1.1),
                Tissue.MARROW,
                p=3,
                frame=SACRUM,
            )
        )
    return blobs


def _bodies_and_discs(d: _Dims) -> list[Blob]:
    """Discs (annulus, nucleus), then bodies (cortex, marrow) and pedicles, then the sacrum."""
    blobs = []
    for i in range(7):
        mid, h = d.disc(i)
        r_a, r_b = (d.ra[i] + d.ra[max(i - 1, 0)]) / 2, (d.rb[i] + d.rb[max(i - 1, 0)]) / 2
        extra = 6.0 if i == 0 else 0.0  # the L5/S1 wedge opens anteriorly
        blobs.append(
            Blob((0, mid, 0.3), (r_a + 0.5, h / 2 + 1.5 + extra, r_b + 0.5), Tissue.ANNULUS, p=4)
        )
        blobs.append(Blob((0, mid, -2.0), (r_a * 0.55, h * 0.3, r_b * 0.55), Tissue.NUCLEUS))
    for i in range(7):
        mid, h = d.body(i)
        blobs.append(Blob((0, mid, 0), (d.ra[i], h / 2, d.rb[i]), Tissue.CORTEX, p=5))
        blobs.append(
            Blob((0, mid, 0), (d.ra[i] - 1.5, h / 2 - 1.3, d.rb[i] - 1.5), Tissue.MARROW, p=5)
        )
        for side in (-1, 1):
            blobs.append(
                Blob(
                    (side * (d.canal_w / 2 + 4.5), mid + 0.2 * h, d.rb[i] + d.canal_d / 2),
                    (4.5, 0.26 * h, d.canal_d / 2 + 2),
                    Tissue.POST_BONE,
                    p=3,
                )
            )
    k, ra0, rb0 = d.k, d.ra[0], d.rb[0]
    blobs.append(Blob((0, -13 * k, 0), (ra0, 13 * k, rb0), Tissue.CORTEX, p=5, frame=SACRUM))
    blobs.append(
        Blob(
            (0, -13 * k, 0), (ra0 - 1.5, 13 * k - 1.3, rb0 - 1.5), Tissue.MARROW, p=5, frame=SACRUM
        )
    )
    blobs.append(
        Blob((0, -45 * k, 2), (ra0 * 0.8, 17 * k, rb0 * 0.75), Tissue.MARROW, p=4, frame=SACRUM)
    )
    return blobs


def _canal(rng: np.random.Generator, d: _Dims) -> list[Blob]:
    """Epidural fat, dural sac (CSF, continuing into the sacral canal), cord and conus ending near
    L1, cauda equina roots below."""
    s_lo, top = d.s_sacrum - 5, d.edges[-1] + 40.0
    blobs = [
        Blob(
            (0, 0, d.b_canal),
            (d.canal_w / 2 + 1.0, _BIG, d.canal_d / 2 + d.epi),
            Tissue.EPIDURAL_FAT,
            s_range=(s_lo, top),
        ),
        Blob(
            (0, 0, d.b_canal),
            (d.canal_w / 2 - 0.5, _BIG, d.canal_d / 2 - 0.5),
            Tissue.CSF,
            s_range=(s_lo, top),
        ),
        Blob(
            (0, -8, d.rb[0] + d.epi + d.canal_d * 0.45),
            (d.canal_w / 2 - 1, 30, d.canal_d * 0.4),
            Tissue.CSF,
            frame=SACRUM,
            s_range=(-30, 10),
        ),
    ]
    conus = d.edges[10] - rng.uniform(-5.0, 15.0)
    blobs.append(Blob((0, conus + 200, d.b_canal - 0.5), (4.5, 200, 4.0), Tissue.CORD))
    for da, db in [
        (-5.5, 2.0),
        (-2.5, 3.5),
        (0.5, 4.0),
        (3.5, 3.0),
        (6.0, 1.0),
        (-4.0, -0.5),
        (4.5, -1.0),
    ]:
        blobs.append(
            Blob(
                (da * d.k, 0, d.b_canal + db),
                (0.9, _BIG, 0.9),
                Tissue.NERVE,
                s_range=(s_lo, conus + 5),
            )
        )
    return blobs


def _levels(d: _Dims, phantom: Phantom, g: dict[tuple[str, str], float]) -> list[Blob]:
    """Per disc level: lateral recesses with traversing roots, the canal squeezed by disc bulge and
    flavum (spinal), facet hypertrophy filling the recess (subarticular), foraminal fat around the
    exiting root shrinking (foraminal), each by its encroachment `g`. Fills the phantom's keypoints,
    disc centres and disc normals."""
    blobs = []
    rec_a, fx = (
        d.canal_w / 2 - 3.0,
        d.canal_w / 2 + 6.5,
    )  # recess and foramen offsets from the midline
    for li, level in enumerate(LEVELS):
        i = 4 - li  # L1/L2 .. L5/S1 = discs 4 .. 0
        s_l, d_h = d.disc(i)
        rbl = (d.rb[i] + d.rb[max(i - 1, 0)]) / 2
        for side in (-1, 1):
            blobs.append(Blob((side * rec_a, s_l, rbl + 3.5), (4.5, d_h / 2 + 5, 3.5), Tissue.CSF))
        g_c = g[("spinal_canal_stenosis", level)]
        blobs.append(
            Blob(
                (0, s_l, rbl + d.epi),
                (d.canal_w / 2 * 0.85, d_h / 2 + 1.0 + 2.5 * g_c, 1.0 + 0.42 * g_c * d.canal_d),
                Tissue.ANNULUS,
            )
        )
        blobs.append(
            Blob(
                (0, s_l + 2.0, d.b_back),
                (d.canal_w / 2 * 0.9, d_h / 2 + 2.0 + 2.0 * g_c, 1.5 + 0.40 * g_c * d.canal_d),
                Tissue.LIGAMENT,
            )
        )
        for side, cond_sub, cond_for in (
            (1, "left_subarticular_stenosis", "left_neural_foraminal_narrowing"),
            (-1, "right_subarticular_stenosis", "right_neural_foraminal_narrowing"),
        ):
            g_s, g_f = g[(cond_sub, level)], g[(cond_for, level)]
            blobs.append(
                Blob(
                    (side * (d.canal_w / 2 + 1.0), s_l + 1.0, rbl + d.epi + d.canal_d * 0.5),
                    (2.5 + 8.5 * g_s, d_h / 2 + 3.0, 2.5 + 7.0 * g_s),
                    Tissue.LIGAMENT,
                )
            )
            blobs.append(
                Blob((side * rec_a, s_l, rbl + 3.5), (1.6, d_h / 2 + 8, 1.6), Tissue.NERVE)
            )
            f_s = s_l + 3.0
            blobs.append(Blob((side * fx, f_s, rbl + 5.0), (6.0, 9.0, 5.5), Tissue.LIGAMENT))
            blobs.append(
                Blob(
                    (side * fx, f_s + 3.5 * g_f, rbl + 5.0),
                    (5.8, 8.7 * (1 - 0.6 * g_f), 5.2 * (1 - 0.65 * g_f)),
                    Tissue.FORAMEN_FAT,
                )
            )
            blobs.append(Blob((side * fx, f_s + 3.0, rbl + 5.0), (6.0, 2.0, 1.8), Tissue.NERVE))
            phantom.keypoints[(cond_sub, level)] = phantom.spine_to_world(
                side * rec_a, s_l, rbl + 3.5
            )
            phantom.keypoints[(cond_for, level)] = phantom.spine_to_world(
                side * fx, f_s + 3.0, rbl + 5.0
            )
        # the canal point: the middle of what is left of the canal at the disc
        front = rbl + d.epi + 1.0 + 0.42 * g_c * d.canal_d
        back = d.b_back - 1.5 - 0.40 * g_c * d.canal_d
        phantom.keypoints[("spinal_canal_stenosis", level)] = phantom.spine_to_world(
            0.0, s_l, (front + back) / 2
        )
        phantom.disc_centres[level] = phantom.spine_to_world(0.0, s_l, 0.0)
        phantom.disc_normals[level] = phantom.spine_axes(s_l)[0]
    # L5/S1 lies between the arc frame and the tilted sacrum: use the mean axis
    u_mix = phantom.spine_axes(d.s_sacrum)[0] + phantom.sac_u
    phantom.disc_normals["l5_s1"] = u_mix / np.linalg.norm(u_mix)
    return blobs
