"""A tiny hand-made spine phantom (imported by the localize and cache tests) in the RSNA layout:
blobs at known LPS points, exact labels.

Every study: Sagittal T1 (series 1, instance numbers *reversed* along the normal), Sagittal T2/STIR
(series 2), and one Axial T2 series (3) holding two stacks (upper: levels L1/L2-L2/L3, lower,
stored in reverse order: L3/L4-L5/S1). Points (LPS mm) per level z: canal (0, 10, z), foramina
(+-14, 20, z - 3) (left = +x), subarticular (+-8, 5, z) (left = +x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.constants import (
    AXIAL_T2,
    CONDITION_LABELS,
    LEVEL_LABELS,
    LEVELS,
    SAGITTAL_T1,
    SAGITTAL_T2,
    SEVERITY_LABELS,
    TARGET_COLUMNS,
)
from spinegrade.dicom import make_uid, write_series

LEVEL_Z = (40.0, 20.0, 0.0, -20.0, -40.0)
SAG_R, SAG_C = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])  # n = -x
AX_R, AX_C = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])  # n = +z


def phantom_points(shift: float = 0.0) -> dict[tuple[str, str], np.ndarray]:
    """(condition, level) -> LPS point; `shift` moves the whole spine along z (per study
    variety)."""
    pts = {}
    for level, z in zip(LEVELS, LEVEL_Z):
        z = z + shift
        pts[("spinal_canal_stenosis", level)] = np.array([0.0, 10.0, z])
        pts[("left_neural_foraminal_narrowing", level)] = np.array([14.0, 20.0, z - 3])
        pts[("right_neural_foraminal_narrowing", level)] = np.array([-14.0, 20.0, z - 3])
        pts[("left_subarticular_stenosis", level)] = np.array([8.0, 5.0, z])
        pts[("right_subarticular_stenosis", level)] = np.array([-8.0, 5.0, z])
    return pts


def _render(
    origin: np.ndarray,
    r: np.ndarray,
    c: np.ndarray,
    step: np.ndarray,
    shape: tuple[int, int, int],
    spacing: float,
    blobs: list[tuple[np.ndarray, float]],
    rng: np.random.Generator,
) -> np.ndarray:
    s, rows, cols = shape
    k, j, i = np.meshgrid(np.arange(s), np.arange(rows), np.arange(cols), indexing="ij")
    world = origin + i[..., None] * spacing * r + j[..., None] * spacing * c + k[..., None] * step
    img = 100 + rng.normal(0, 10, size=shape)
    for p, amp in blobs:
        img += amp * np.exp(-((world - p) ** 2).sum(-1) / (2 * 3.0**2))
    return np.clip(img, 0, 4000).astype(np.uint16)


def write_phantom_study(
    images: Path, study_id: int, shift: float = 0.0, missing: tuple[str, ...] = (), seed: int = 0
) -> pd.DataFrame:
    """Write one study under `images/<study_id>/`; return its label coordinate rows (CSV
    spellings)."""
    rng = np.random.default_rng(seed)
    pts = phantom_points(shift)
    blobs = [
        (p, 800.0 if cond == "spinal_canal_stenosis" else 500.0) for (cond, _), p in pts.items()
    ]
    rows, root = [], images / str(study_id)
    sag_shape, sag_spacing = (9, 48, 48), 2.0
    sag_origin = np.array([16.0, -38.0, 48.0 + shift])  # slice k at x = 16 - 4k
    vols = {}
    for sid, desc in ((1, SAGITTAL_T1), (2, SAGITTAL_T2)):
        if desc in missing:
            continue
        step = np.array([-4.0, 0.0, 0.0])
        px = _render(sag_origin, SAG_R, SAG_C, step, sag_shape, sag_spacing, blobs, rng)
        inst = list(range(9, 0, -1)) if sid == 1 else list(range(1, 10))
        write_series(
            root / str(sid),
            px,
            origin=sag_origin,
            row_dir=SAG_R,
            col_dir=SAG_C,
            pixel_spacing=(sag_spacing, sag_spacing),
            slice_step=step,
            slice_thickness=4.0,
            series_description=desc,
            study_uid=make_uid("s", str(study_id)),
            series_uid=make_uid("s", str(study_id), str(sid)),
            series_number=sid,
            instance_numbers=inst,
        )
        vols[desc] = (sag_origin, SAG_R, SAG_C, step, sag_spacing, inst, sid)
    if AXIAL_T2 not in missing:
        upper = [
            np.array([-32.0, -22.0, z + shift]) for z in np.arange(12.0, 49.0, 4.0)
        ]  # 10 slices
        lower = [
            np.array([-32.0, -22.0, z + shift]) for z in np.arange(-48.0, 5.0, 4.0)
        ]  # 14 slices
        positions = np.array(upper + lower)
        inst = list(range(1, 11)) + list(range(24, 10, -1))  # lower stack numbered in reverse
        px = np.concatenate(
            [
                _render(upper[0], AX_R, AX_C, np.array([0, 0, 4.0]), (10, 32, 32), 2.0, blobs, rng),
                _render(lower[0], AX_R, AX_C, np.array([0, 0, 4.0]), (14, 32, 32), 2.0, blobs, rng),
            ]
        )
        write_series(
            root / "3",
            px,
            origin=positions[0],
            row_dir=AX_R,
            col_dir=AX_C,
            pixel_spacing=(2.0, 2.0),
            slice_positions=positions,
            slice_thickness=4.0,
            series_description=AXIAL_T2,
            study_uid=make_uid("s", str(study_id)),
            series_uid=make_uid("s", str(study_id), "3"),
            series_number=3,
            instance_numbers=inst,
        )
        for k, p in enumerate(positions):
            vols.setdefault("axial_slices", []).append((p, inst[k]))
    for (cond, level), p in pts.items():
        if cond.endswith("subarticular_stenosis"):
            if AXIAL_T2 in missing:
                continue
            origin, number = min(vols["axial_slices"], key=lambda t: abs(t[0][2] - p[2]))
            x, y = (p - origin) @ AX_R / 2.0, (p - origin) @ AX_C / 2.0
            rows.append((study_id, 3, number, cond, level, x, y))
            continue
        desc = SAGITTAL_T2 if cond == "spinal_canal_stenosis" else SAGITTAL_T1
        if desc not in vols:
            continue
        origin, r, c, step, spacing, inst, sid = vols[desc]
        k = int(round((p - origin) @ step / (step @ step)))
        x, y = (p - origin) @ r / spacing, (p - origin) @ c / spacing
        rows.append((study_id, sid, inst[k], cond, level, x, y))
    df = pd.DataFrame(
        rows, columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]
    )
    df["condition"] = df["condition"].map(CONDITION_LABELS)
    df["level"] = df["level"].map(LEVEL_LABELS)
    return df


def write_phantom_root(
    root: Path, n: int = 4, missing: dict[int, tuple[str, ...]] | None = None
) -> Path:
    """An RSNA folder with `n` phantom studies (ids 101, 102, ...): csv tables + train_images."""
    missing = missing or {}
    coords, series = [], []
    for i in range(n):
        sid = 101 + i
        gone = missing.get(sid, ())
        coords.append(
            write_phantom_study(
                root / "train_images", sid, shift=(i % 3 - 1) * 3.0, missing=gone, seed=i
            )
        )
        for num, desc in ((1, SAGITTAL_T1), (2, SAGITTAL_T2), (3, AXIAL_T2)):
            if desc not in gone:
                series.append((sid, num, desc))
    pd.concat(coords).to_csv(root / "train_label_coordinates.csv", index=False)
    pd.DataFrame(series, columns=["study_id", "series_id", "series_description"]).to_csv(
        root / "train_series_descriptions.csv", index=False
    )
    labels = pd.DataFrame({"study_id": [101 + i for i in range(n)]})
    for col in TARGET_COLUMNS:
        labels[col] = SEVERITY_LABELS["normal_mild"]
    labels.to_csv(root / "train.csv", index=False)
    return root
