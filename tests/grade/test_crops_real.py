"""The grader's crops around the real labelled points of the two RSNA training studies: centred
on the point, in the canonical frame, and drawn as a montage a person can look at.

The montage is written to `$SPINEGRADE_KEEP_FIGURES` when set (else into the test's tmp folder) and
its path printed (`pytest -s`). It is made from licensed images: never commit it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from spinegrade.constants import CONDITION_LABELS, LEVEL_LABELS, TARGETS
from spinegrade.data.tables import load_tables
from spinegrade.dicom import load_study
from spinegrade.grade.crops import crop_2p5d, crop_frame
from spinegrade.grade.dataset import locate_targets
from spinegrade.report.figures import new_figure, save_png

STUDIES = (100206310, 1002894806)
SLICES, CROP_MM, CROP_PX = 5, 40.0, 63  #: odd: the labelled point is the centre pixel


@pytest.fixture(scope="module")
def located(shared_data: Callable[[str], Path]) -> dict[int, list]:
    root = shared_data("rsna_dicom")
    tables = load_tables(root)
    out = {}
    for sid in STUDIES:
        study = load_study(root / "train_images" / str(sid), tables.series)
        out[sid] = locate_targets(study, tables.coordinates[tables.coordinates.study_id == sid])
    return out


def test_every_labelled_point_is_found_and_is_the_centre_of_its_crop(located) -> None:
    for sid, found in located.items():
        assert sum(loc is not None for loc in found) == 25, sid  # all 25 targets are labelled
        for loc in found:
            crop = crop_2p5d(
                loc.volume,
                loc.slice_index,
                loc.x,
                loc.y,
                view=loc.view,
                slices=SLICES,
                crop_mm=CROP_MM,
                crop_px=CROP_PX,
            )
            expected = map_coordinates(
                loc.volume.pixels[loc.slice_index].astype(np.float64), [[loc.y], [loc.x]], order=1
            )[0]
            centre = crop[SLICES // 2, CROP_PX // 2, CROP_PX // 2]
            assert centre == pytest.approx(expected, rel=1e-4, abs=1e-3)
            assert crop.std() > 0  # real anatomy, not padding


def test_the_axial_frame_puts_the_patient_left_on_the_crop_right(located) -> None:
    """Both subarticular points of a level on one slice: seen from the left point's crop, the
    right point lies to the left (crop columns run patient right -> left)."""
    checked = 0
    for found in located.values():
        index = {t: i for i, t in enumerate(TARGETS)}
        for level in LEVEL_LABELS:
            left = found[index[("left_subarticular_stenosis", level)]]
            right = found[index[("right_subarticular_stenosis", level)]]
            if left.volume is not right.volume or left.slice_index != right.slice_index:
                continue
            h, _, _ = crop_frame(left.volume, "axial")
            world = left.volume.voxel_to_world(
                [[left.x, left.y, left.slice_index], [right.x, right.y, right.slice_index]]
            )
            assert float((world[1] - world[0]) @ h) < -5.0  # mm: the canal lies between them
            checked += 1
    assert checked >= 7  # of the 10 levels, those labelled on one instance


def test_the_crops_as_a_montage(located, tmp_path: Path) -> None:
    out = Path(os.environ.get("SPINEGRADE_KEEP_FIGURES", tmp_path))
    for sid, found in located.items():
        fig, axes = new_figure(2.0 * SLICES, 1.9 * len(TARGETS), len(TARGETS), SLICES)
        for row, ((condition, level), loc) in enumerate(zip(TARGETS, found)):
            crop = crop_2p5d(
                loc.volume,
                loc.slice_index,
                loc.x,
                loc.y,
                view=loc.view,
                slices=SLICES,
                crop_mm=CROP_MM,
                crop_px=CROP_PX,
            )
            for k in range(SLICES):
                ax = axes[row, k]
                ax.imshow(crop[k], cmap="gray")
                ax.plot(CROP_PX // 2, CROP_PX // 2, "+", color="red", ms=8)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row, 0].set_ylabel(
                f"{CONDITION_LABELS[condition]}\n{LEVEL_LABELS[level]}", fontsize=6
            )
        fig.suptitle(
            f"study {sid}: the grader's {SLICES}-slice crops ({CROP_MM:g} mm) around "
            "each labelled point (red +)",
            fontsize=9,
        )
        path = save_png(fig, out / f"crops_{sid}.png")
        print(f"montage: {path}")
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 50_000
