"""A tiny RSNA-layout data set whose severities are visible: a blob at each point, larger = worse.

Every study has a Sagittal T1 (foraminal points), a Sagittal T2/STIR (spinal) and an Axial T2
(subarticular) series; the blob radius at each target's point grows with its label, so a grader
can learn it in a few seconds. Study 9003 has no axial series. `trained` is a small grader
trained on 6 of them (once per session); `severe_study` writes a new study with one severe level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.config import Config, load_config
from spinegrade.constants import (
    AXIAL_T2,
    CONDITION_LABELS,
    LEVEL_LABELS,
    LEVELS,
    SAGITTAL_T1,
    SAGITTAL_T2,
    SEVERITIES,
    SEVERITY_LABELS,
    TARGET_COLUMNS,
    TARGETS,
)
from spinegrade.data.tables import load_tables
from spinegrade.dicom import make_uid, write_series
from spinegrade.grade import train_grader

SIZE, SAG_SLICES = 48, 7
NO_AXIAL = 9003
TRAIN = [9000, 9001, 9002, 9003, 9004, 9005]
SEVERE_STUDY = 9100  #: see `severe_study`

#: A small grader with little augmentation, so that 6 studies are learnt in a few seconds of CPU
#: (the `tiny` config's grader augments more, to generalise across studies, and learns these 6
#: slower). 24 px crops (1 mm pixels): its Grad-CAM stage is 6 x 6 (`grade.cam`).
MEMORISE = [
    "grade.backbone=test_resnet",
    "grade.crop_mm=24",
    "grade.crop_px=24",
    "grade.slice_shift=0",
    "grade.coord_jitter_mm=0.5",
    "grade.angle_deg=5",
    "grade.dim=32",
    "grade.optim.epochs=6",
    "grade.optim.batch_size=2",
    "grade.optim.lr=0.002",
]


def grader_config() -> Config:
    """The `tiny` config with the `MEMORISE` grader."""
    return load_config("tiny", ["data.num_workers=0", *MEMORISE])


def _blob(img: np.ndarray, row: int, col: int, label: int) -> None:
    yy, xx = np.ogrid[: img.shape[0], : img.shape[1]]
    img[(yy - row) ** 2 + (xx - col) ** 2 <= (1 + 2 * label) ** 2] = 1500


def _study(
    root: Path, sid: int, labels: np.ndarray, rng: np.random.Generator, axial: bool
) -> list[dict]:
    """Write one study's series; return its coordinate rows (CSV spellings)."""
    rows: list[dict] = []
    noise = lambda shape: rng.normal(300, 40, size=shape).clip(0).astype(np.uint16)  # noqa: E731
    level_row = {lv: 8 + 8 * i for i, lv in enumerate(LEVELS)}
    sag = {
        1: (SAGITTAL_T1, noise((SAG_SLICES, SIZE, SIZE))),
        2: (SAGITTAL_T2, noise((SAG_SLICES, SIZE, SIZE))),
    }
    ax = noise((10, SIZE, SIZE))
    for t, (condition, level) in enumerate(TARGETS):
        label = int(labels[t])
        if condition == "spinal_canal_stenosis":
            series, k, x, y = 2, SAG_SLICES // 2, 24, level_row[level]
        elif "foraminal" in condition:  # n = -x: slice 1 lies at larger x = patient left
            series, k, x, y = (
                1,
                1 if condition.startswith("left") else SAG_SLICES - 2,
                24,
                level_row[level],
            )
        else:
            series, k, x, y = (
                3,
                2 * LEVELS.index(level),
                32 if condition.startswith("left") else 16,
                24,
            )
        if series == 3 and not axial:
            continue
        img = (sag[series][1] if series < 3 else ax)[k]
        _blob(img, y, x, max(label, 0))
        if label >= 0:
            rows.append(
                {
                    "study_id": sid,
                    "series_id": series,
                    "instance_number": k + 1,
                    "condition": CONDITION_LABELS[condition],
                    "level": LEVEL_LABELS[level],
                    "x": x,
                    "y": y,
                }
            )
    study_uid = make_uid("grade-fixture", sid)
    for series, (description, pix) in sag.items():
        write_series(
            root / str(sid) / str(series),
            pix,
            origin=(10.0, -24.0, 24.0),
            row_dir=(0, 1, 0),
            col_dir=(0, 0, -1),
            pixel_spacing=(1.0, 1.0),
            slice_thickness=3.0,
            series_description=description,
            study_uid=study_uid,
            series_uid=make_uid(study_uid, series),
            series_number=series,
        )
    if axial:
        write_series(
            root / str(sid) / "3",
            ax,
            origin=(-24.0, -24.0, -15.0),
            row_dir=(1, 0, 0),
            col_dir=(0, 1, 0),
            pixel_spacing=(1.0, 1.0),
            slice_thickness=4.0,
            series_description=AXIAL_T2,
            study_uid=study_uid,
            series_uid=make_uid(study_uid, 3),
            series_number=3,
        )
    return rows


@pytest.fixture(scope="session")
def grade_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RSNA folder with 8 studies (9000..9007): train.csv, series descriptions, coordinates,
    images."""
    root = tmp_path_factory.mktemp("grade_data")
    rng = np.random.default_rng(0)
    label_rows, coord_rows, series_rows = [], [], []
    for i in range(8):
        sid = 9000 + i
        labels = rng.choice(3, size=25, p=[0.5, 0.3, 0.2])
        labels[rng.random(25) < 0.05] = -1
        coord_rows += _study(root / "train_images", sid, labels, rng, axial=sid != NO_AXIAL)
        label_rows.append(
            {
                "study_id": sid,
                **{
                    c: SEVERITY_LABELS[SEVERITIES[k]] if k >= 0 else ""
                    for c, k in zip(TARGET_COLUMNS, labels)
                },
            }
        )
        for series, desc in ((1, SAGITTAL_T1), (2, SAGITTAL_T2), (3, AXIAL_T2)):
            if series < 3 or sid != NO_AXIAL:
                series_rows.append(
                    {"study_id": sid, "series_id": series, "series_description": desc}
                )
    pd.DataFrame(label_rows).to_csv(root / "train.csv", index=False)
    pd.DataFrame(series_rows).to_csv(root / "train_series_descriptions.csv", index=False)
    pd.DataFrame(coord_rows).to_csv(root / "train_label_coordinates.csv", index=False)
    return root


@pytest.fixture(scope="session")
def trained(grade_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `model.pt` of the `MEMORISE` grader trained on the `TRAIN` studies (~20 s of CPU)."""
    torch.manual_seed(0)
    tables = load_tables(grade_data)
    out = tmp_path_factory.mktemp("grader")
    return train_grader(
        grade_data,
        TRAIN,
        tables.coordinates,
        tables.labels,
        out / "grade",
        grader_config(),
        val_ids=[9006],
        progress=False,
    )


def severe_study(root: Path, target: tuple[str, str]) -> tuple[Path, pd.DataFrame]:
    """Write study `SEVERE_STUDY` under `root`: every target normal/mild (the smallest blob) but
    `target`, severe (the largest); returns `(study folder, its coordinates, snake_case)`."""
    labels = np.zeros(len(TARGETS), dtype=np.int64)
    labels[TARGETS.index(target)] = 2
    rows = _study(root, SEVERE_STUDY, labels, np.random.default_rng(1), axial=True)
    coords = pd.DataFrame(rows)
    coords["condition"] = coords["condition"].map({v: k for k, v in CONDITION_LABELS.items()})
    coords["level"] = coords["level"].map({v: k for k, v in LEVEL_LABELS.items()})
    return root / str(SEVERE_STUDY), coords
