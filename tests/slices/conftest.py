"""Tiny generated folders of both `spinegrade slices` layouts, written with PIL into tmp_path.

Sagittal T1 slices: per study one series, per side two slices (levels l1-l3 marked on the first,
l4-l5 on the second, as real slices carry only some levels), each marked foramen a bright disc on
a dim noisy background at a level-dependent height, its radius growing with the severity; each
study's column of foramina sits somewhere else (so that only the image tells where). One study's
original image is not square (its PNG is stretched, as the real ones are).

Axial T2 crops: per study level one RGB crop (three slightly different channels), a disc on each
side whose radius encodes that side's subarticular grade (the image's right half is the patient's
left, as in the real crops) and a central disc for the canal. One study lacks a level, one grade is
blank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spinegrade.config import Config, load_config
from spinegrade.constants import LEVELS, SEVERITIES, SEVERITY_LABELS

#: Disc radius (pixels) of each severity.
RADIUS = (1.5, 3.0, 4.5)
SLICE_PX = 64
#: A fast config for the generated folders: 1 mm PNG pixels, 16 px crops, tiny networks, 2 folds.
FAST = [
    "data.folds=2",
    "data.num_workers=0",
    "slices.fov_mm=64",
    "slices.crop_width_mm=30",
    "slices.side_offset=0.25",
    "localize.backbone=test_resnet",
    "localize.image_size=64",
    "localize.decoder_width=16",
    "localize.sigma_px=1.0",
    "localize.optim.epochs=1",
    "localize.optim.batch_size=4",
    "localize.optim.warmup_epochs=0",
    "grade.backbone=test_resnet",
    "grade.crop_mm=16",
    "grade.crop_px=16",
    "grade.dim=16",
    "grade.optim.epochs=1",
    "grade.optim.batch_size=2",
    "grade.optim.warmup_epochs=0",
]


def fast_config(name: str, *more: str) -> Config:
    """`name` (slices_cpu or crops_cpu) with the fast overrides and `more`."""
    return load_config(name, [*FAST, *more])


def _disc(image: np.ndarray, x: float, y: float, radius: float, value: float) -> None:
    rows, cols = np.ogrid[: image.shape[-2], : image.shape[-1]]
    image[..., (cols - x) ** 2 + (rows - y) ** 2 <= radius**2] = value


def write_slices_folder(root: Path, studies: int = 6, seed: int = 0) -> Path:
    """A Sagittal T1 slices folder of `studies` studies; returns `root`."""
    rng = np.random.default_rng(seed)
    slices, points = [], []
    for i in range(studies):
        study, series = 1000 + i, 50 + i
        orig = (160, 128) if i == 0 else (128, 128)
        shift = rng.uniform(-8, 8), rng.uniform(-4, 4)  # where this study's spine sits
        for side, condition in enumerate(
            ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing")
        ):
            for part, levels in enumerate(((0, 1, 2), (3, 4))):
                instance = 1 + 2 * side + part
                image = rng.normal(30, 8, (SLICE_PX, SLICE_PX))
                for lv in levels:
                    severity = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
                    x = 32 + shift[0] + rng.normal(0, 1)
                    y = 8 + 12 * lv + shift[1] + rng.normal(0, 0.5)
                    _disc(image, x, y, RADIUS[severity], 220)
                    points.append(
                        (study, series, instance, condition, LEVELS[lv], x, y,
                         x * orig[1] / SLICE_PX, y * orig[0] / SLICE_PX,
                         SEVERITY_LABELS[SEVERITIES[severity]])
                    )  # fmt: skip
                file = f"images/{study}/{series}/{instance}.png"
                (root / file).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / file)
                slices.append((study, series, instance, file, *orig))
    pd.DataFrame(
        slices,
        columns=["study_id", "series_id", "instance_number", "file", "orig_rows", "orig_cols"],
    ).to_csv(root / "slices.csv", index=False)
    pd.DataFrame(
        points,
        columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y",
                 "x_orig", "y_orig", "severity"],
    ).to_csv(root / "points.csv", index=False)  # fmt: skip
    return root


def crop_image(rng: np.random.Generator, grades: tuple[int, int, int], size=(20, 30)) -> np.ndarray:
    """An RGB crop `(rows, cols, 3)` uint8: canal disc in the middle, the right subarticular disc
    on the image's left, the left one on the image's right (`grades`: canal, left, right)."""
    rows, cols = size
    image = rng.normal(30, 6, (3, rows, cols))
    canal, left, right = grades
    _disc(image, cols / 2 - 0.5, rows / 2, RADIUS[canal], 200)
    _disc(image, cols * 0.75, rows / 2, RADIUS[left], 230)
    _disc(image, cols * 0.25, rows / 2, RADIUS[right], 230)
    image += rng.normal(0, 4, (3, 1, 1))  # the three neighbouring slices differ a little
    return np.clip(image, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def write_crops_folder(root: Path, studies: int = 8, seed: int = 0) -> Path:
    """An Axial T2 crops folder of `studies` studies; returns `root`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(studies):
        study, series = 2000 + i, 70 + i
        for j, level in enumerate(LEVELS):
            if i == 1 and j == 4:
                continue  # a study without its l5_s1 crop
            grades = tuple(int(g) for g in rng.choice(3, size=3, p=[0.5, 0.3, 0.2]))
            shape = (18 + 2 * (i % 3), 28 + 2 * (j % 3))
            file = f"images/{study}/{series}/{j + 1}.png"
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop_image(rng, grades, shape)).save(root / file)
            names = [SEVERITY_LABELS[SEVERITIES[g]] for g in grades]
            if i == 2 and j == 0:
                names[1] = ""  # a blank grade
            rows.append((study, series, j + 1, level, file, *shape, names[1], names[2], names[0]))
    pd.DataFrame(
        rows,
        columns=["study_id", "series_id", "instance_number", "level", "file", "crop_rows",
                 "crop_cols", "left_subarticular_stenosis", "right_subarticular_stenosis",
                 "spinal_canal_stenosis"],
    ).to_csv(root / "crops.csv", index=False)  # fmt: skip
    return root


@pytest.fixture
def slices_folder(tmp_path: Path) -> Path:
    return write_slices_folder(tmp_path / "sagt1")


@pytest.fixture
def crops_folder(tmp_path: Path) -> Path:
    return write_crops_folder(tmp_path / "crops")


@pytest.fixture(scope="session")
def slices_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A trained 2-fold slices run on a generated folder (built once): `data`, `run`, `summary`."""
    from spinegrade.slices.train import train

    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("slices_run")
    data = write_slices_folder(root / "sagt1")
    summary = train(data, root / "run", fast_config("slices_cpu"), progress=False)
    return {"data": data, "run": root / "run", "summary": summary, "root": root}


@pytest.fixture(scope="session")
def crops_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A trained 2-fold crops run on a generated folder (built once): `data`, `run`, `summary`."""
    from spinegrade.slices.train import train

    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("crops_run")
    data = write_crops_folder(root / "crops")
    summary = train(data, root / "run", fast_config("crops_cpu"), progress=False)
    return {"data": data, "run": root / "run", "summary": summary, "root": root}
