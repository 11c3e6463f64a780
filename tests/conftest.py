"""Fixtures shared by the whole test suite: small synthetic DICOM series and studies in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.config import load_config
from spinegrade.constants import AXIAL_T2, SAGITTAL_T1, SAGITTAL_T2
from spinegrade.cv.folder import FOLD_JSON, PRIOR_CSV, RunFolder
from spinegrade.cv.train import prior_table
from spinegrade.data.synthetic import generate
from spinegrade.data.tables import load_tables
from spinegrade.dicom import make_uid, write_series
from spinegrade.grade.train import train_grader
from spinegrade.io import write_json
from spinegrade.localize.train import train_localizer

#: (row_dir r, col_dir c) of the usual RSNA planes: sagittal n = -x (patient right), axial n = +z.
SAGITTAL_IOP = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))
AXIAL_IOP = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))

MakeSeries = Callable[..., Path]
MakeStudy = Callable[..., Path]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker takes its share of the cores for torch (and ONNX Runtime,
    which follows it): two workers of two torch threads each would oversubscribe 2 cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


#: Where the real RSNA data lives: `../shared/data` beside the repository (CI has it; a fresh clone
#: does not), or `$SPINEGRADE_SHARED_DATA`. Its licence forbids copying it into the repository.
SHARED_DATA = Path(
    os.environ.get("SPINEGRADE_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


@pytest.fixture(scope="session")
def shared_data() -> Callable[[str], Path]:
    """`shared_data("rsna_dicom")` -> that folder of the real data, or skip the test saying which
    folder is absent. The one door through which tests reach `../shared`."""

    def get(name: str) -> Path:
        folder = SHARED_DATA / name
        if not folder.is_dir():
            pytest.skip(
                f"real RSNA data not here: {folder} is absent (../shared/data/{name}; "
                "non-commercial licence, never in the repository)"
            )
        return folder

    return get


@pytest.fixture
def make_series() -> MakeSeries:
    """Factory `make_series(folder, plane="sagittal"|"axial", slices=5, size=(32, 32), **kw)`,
    `kw` being `write_series` keywords.

    Writes a small series (pixels = slice*1000 + row*size[1] + col, uint16, so every voxel is
    recognisable) centred on the LPS origin, 1 mm pixels, 3 mm slices, and returns its folder.
    Any `write_series` keyword (origin, pixel_spacing, slice_step, pixels, ...) overrides the
    default.
    """

    def make(
        folder: Path,
        plane: str = "sagittal",
        slices: int = 5,
        size: tuple[int, int] = (32, 32),
        **kwargs: Any,
    ) -> Path:
        rows, cols = size
        r, c = SAGITTAL_IOP if plane == "sagittal" else AXIAL_IOP
        n = np.cross(r, c)
        spacing = kwargs.get("pixel_spacing", (1.0, 1.0))
        step = 3.0
        centre_offset = (np.multiply(r, cols * spacing[1]) + np.multiply(c, rows * spacing[0])) / 2
        defaults: dict[str, Any] = dict(
            pixels=(
                np.arange(slices)[:, None, None] * 1000 + np.arange(rows * cols).reshape(rows, cols)
            ).astype(np.uint16),
            origin=-centre_offset - n * step * (slices - 1) / 2,
            row_dir=r,
            col_dir=c,
            pixel_spacing=spacing,
            slice_step=step,
            slice_thickness=step,
            series_description="Sagittal T2/STIR" if plane == "sagittal" else AXIAL_T2,
            study_uid=make_uid("study", folder.parent.name),
            series_uid=make_uid("series", folder.parent.name, folder.name),
            series_number=int(folder.name) if folder.name.isdigit() else 1,
        )
        write_series(folder, **{**defaults, **kwargs})
        return folder

    return make


@pytest.fixture
def make_study(tmp_path: Path, make_series: MakeSeries) -> MakeStudy:
    """Factory `make_study(study_id=1001, slices=5, size=(32, 32)) -> study folder`.

    RSNA layout `<tmp>/<study_id>/<series_id>/<instance>.dcm` with series 1 = Sagittal T1,
    2 = Sagittal T2/STIR (both n = -x), 3 = Axial T2 (n = +z), each centred on the LPS origin.
    """

    def make(study_id: int = 1001, slices: int = 5, size: tuple[int, int] = (32, 32)) -> Path:
        root = tmp_path / str(study_id)
        for series_id, plane, description in (
            (1, "sagittal", SAGITTAL_T1),
            (2, "sagittal", SAGITTAL_T2),
            (3, "axial", AXIAL_T2),
        ):
            make_series(root / str(series_id), plane, slices, size, series_description=description)
        return root

    return make


@pytest.fixture(scope="session")
def rsna(shared_data: Callable[[str], Path]) -> Path:
    """The real RSNA label tables (`../shared/data/rsna`: train.csv, descriptions, 20% of
    coordinates)."""
    return shared_data("rsna")


def build_tiny_run(
    root: Path, epochs: int = 0, data: Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, Path]:
    """3 small synthetic studies (or those of `data`, with its study cache) and a run folder of
    one complete fold trained `epochs` epochs (both stages) on them, under `root`: see the `tiny`
    fixture. `overrides` are further config `key=value`s."""
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the untrained weights, and so the tests that rely on where they point
    run = RunFolder(root / "run")
    cache = (data.parent if data else root) / "cache"
    if data is None:
        data = root / "data"
        generate(data, 3, seed=5, size="small", progress=False)
    tables = load_tables(data)
    # untrained: speed and plumbing only; this localiser's untrained output still places the
    # sagittal points (the tests rely on it); the `tiny` config's untrained one does not
    settings = [
        f"localize.optim.epochs={epochs}",
        f"grade.optim.epochs={epochs}",
        "data.num_workers=0",
        "localize.backbone=resnet18",
        "localize.image_size=64",
        "localize.heatmap_stride=4",
    ]
    cfg = load_config("tiny", [*settings, *overrides])
    ids = sorted(int(s) for s in tables.labels.study_id)
    run.start(cfg, pd.DataFrame({"study_id": ids, "fold": 0}), data, [0], 1)
    run.fold_dir(0).mkdir(parents=True)
    prior_table(tables.labels).to_csv(run.fold_dir(0) / PRIOR_CSV, index=False)
    train_localizer(data, ids, run.localizer_dir(0), cfg, cache_dir=cache, progress=False)
    train_grader(
        data,
        ids,
        tables.coordinates,
        tables.labels,
        run.grader_model(0).parent,
        cfg,
        progress=False,
    )
    write_json(run.fold_dir(0) / FOLD_JSON, {"fold": 0})
    types = tables.series.groupby("study_id").series_description.apply(set)
    complete = next(s for s in ids if len(types[s]) == 3)
    return {"data": data, "run": run.path, "complete": complete, "root": root}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny run folder, built once: 3 small synthetic studies, one fold trained for zero epochs
    (an untrained network is enough to check outputs, robustness and geometry; model quality is
    measured by `spinegrade train` / `evaluate`, not here).

    `data` (3 synthetic studies), `run` (one untrained, complete fold in the run-folder
    contract's layout), `complete` (id of a study with all three series types), `root`."""
    return build_tiny_run(tmp_path_factory.mktemp("inference"))
