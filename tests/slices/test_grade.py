"""Stage 2 on PNG images: where crops grade each target, and the left/right mirror on real-style
crops (the image's right side is the patient's left): a model trained with the mirror predicts a
crop's mirror with its left and right swapped; with TTA, exactly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spinegrade.dicom.geometry import Volume
from spinegrade.errors import ConfigError
from spinegrade.grade.predict import Grader
from spinegrade.slices.grade import (
    check_config,
    grade,
    label_vectors,
    load_volumes,
    located_crops,
    located_slices,
    point_offsets,
    train_grader,
)
from spinegrade.slices.inputs import AXIAL_TARGETS, CROPS, SLICES, CropFolder
from spinegrade.slices.volumes import crop_volume, slice_volume

from .conftest import fast_config, write_crops_folder

LEFT = [i for i, (c, _) in enumerate(AXIAL_TARGETS) if c == "left_subarticular_stenosis"]
RIGHT = [i for i, (c, _) in enumerate(AXIAL_TARGETS) if c == "right_subarticular_stenosis"]
#: Enough to learn the generated crops' discs in ~15 s on one thread.
LEARN = [
    "grade.optim.epochs=8",
    "grade.optim.lr=0.003",
    "grade.coord_jitter_mm=0.5",
    "grade.dim=32",
    "grade.intensity_p=0",
]


def test_the_config_must_fit_the_images() -> None:
    check_config(fast_config("slices_cpu"), SLICES)
    check_config(fast_config("crops_cpu"), CROPS)
    with pytest.raises(ConfigError, match="nothing to mirror"):
        check_config(fast_config("slices_cpu", "grade.mirror_p=0.5"), SLICES)
    with pytest.raises(ConfigError, match="nothing to mirror"):
        check_config(fast_config("slices_cpu", "grade.consistency_weight=0.5"), SLICES)
    check_config(fast_config("crops_cpu", "grade.consistency_weight=0.5"), CROPS)  # axial: fine
    with pytest.raises(ConfigError, match="consistency_weight is -1"):
        check_config(fast_config("crops_cpu", "grade.consistency_weight=-1"), CROPS)
    with pytest.raises(ConfigError, match="one slice"):
        check_config(fast_config("slices_cpu", "grade.slices=3"), SLICES)
    with pytest.raises(ConfigError, match="3 slices as channels"):
        check_config(fast_config("crops_cpu", "grade.slices=5"), CROPS)
    with pytest.raises(ConfigError, match="early_stopping is not supported"):
        check_config(fast_config("slices_cpu", "localize.optim.early_stopping=true"), SLICES)
    with pytest.raises(ConfigError, match="no DICOM geometry"):
        check_config(fast_config("crops_cpu", "grade.views.spinal=both"), CROPS)
    with pytest.raises(ConfigError, match="at least 1 grader"):
        check_config(fast_config("slices_cpu", "slices.graders=0"), SLICES)
    check_config(fast_config("slices_cpu", "slices.found_point_graders=2"), SLICES)
    with pytest.raises(ConfigError, match="between 0 and slices.graders"):
        check_config(fast_config("slices_cpu", "slices.found_point_graders=3"), SLICES)
    with pytest.raises(ConfigError, match="crops have no localiser"):
        check_config(fast_config("crops_cpu", "slices.found_point_graders=1"), CROPS)


def test_with_early_stopping_an_inner_split_of_the_training_studies_chooses_the_epoch(
    tmp_path: Path,
) -> None:
    """The grader's epoch is chosen on some training studies, never a held-out one."""
    import json

    from spinegrade.training.selection import SELECTION_JSON

    folder = CropFolder.open(write_crops_folder(tmp_path / "c", studies=6), truth=True)
    more = ("grade.optim.early_stopping=true", "grade.optim.inner_folds=2", "grade.optim.epochs=2")
    cfg = fast_config("crops_cpu", *more)
    ids = folder.studies()
    train_ids, held = ids[:4], ids[4:]
    volumes = load_volumes(folder, cfg)
    path = train_grader(folder, volumes, folder.labels(), train_ids, held, tmp_path / "g", cfg)
    record = json.loads((path.parent / SELECTION_JSON).read_text())
    assert set(record["inner_studies"]) < set(train_ids)
    assert record["inner_studies"] and record["epoch"] in (1, 2)


def test_axial_crops_train_with_the_consistency_term(tmp_path: Path) -> None:
    """In crops mode the mirror is defined (columns flipped, left <-> right): the term trains."""
    folder = CropFolder.open(write_crops_folder(tmp_path / "c", studies=4), truth=True)
    cfg = fast_config("crops_cpu", "grade.consistency_weight=0.5", "grade.mirror_p=0")
    ids = folder.studies()
    volumes = load_volumes(folder, cfg)
    path = train_grader(folder, volumes, folder.labels(), ids[:3], ids[3:], tmp_path / "g", cfg)
    (record,) = torch.load(path, weights_only=False)["history"]
    assert record["train_consistency"] > 0 and record["train_loss"] == pytest.approx(
        record["train_task"] + 0.5 * record["train_consistency"], rel=1e-5
    )


def test_each_axial_target_is_graded_on_its_own_side_of_the_crop() -> None:
    vol = crop_volume(np.zeros((3, 20, 30), np.uint8), 30.0)
    crops = _crops_table([("l1_l2", "a.png")])
    (sample,) = located_crops(crops, {"a.png": vol}, [7], side_offset=0.25)
    by = {t: loc for t, loc in zip(AXIAL_TARGETS, sample)}
    canal = by[("spinal_canal_stenosis", "l1_l2")]
    left, right = (
        by[("left_subarticular_stenosis", "l1_l2")],
        by[("right_subarticular_stenosis", "l1_l2")],
    )
    assert canal.x == pytest.approx(14.5) and canal.y == pytest.approx(9.5)
    assert left.x == pytest.approx(14.5 + 7.5) and right.x == pytest.approx(14.5 - 7.5)
    assert by[("spinal_canal_stenosis", "l2_l3")] is None  # no crop of that level


@pytest.fixture(scope="module")
def mirror_trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Grader, CropFolder, dict]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("mirror")
    folder = CropFolder.open(write_crops_folder(root / "train", studies=16, seed=1), truth=True)
    cfg = fast_config("crops_cpu", *LEARN)
    assert cfg.grade.mirror_p == 0.5
    volumes = load_volumes(folder, cfg)
    path = train_grader(
        folder, volumes, folder.labels(), folder.studies(), [], root / "grader", cfg, progress=False
    )
    test = CropFolder.open(write_crops_folder(root / "test", studies=6, seed=7), truth=True)
    return Grader.load(path), test, {"cfg": cfg, "volumes": load_volumes(test, cfg)}


def _mirror(volumes: dict[str, Volume]) -> dict[str, Volume]:
    """The crops of the mirrored patients: every crop's columns flipped."""
    return {
        f: replace(v, pixels=np.ascontiguousarray(v.pixels[:, :, ::-1])) for f, v in volumes.items()
    }


def _both(trained, tta: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    grader, test, extra = trained
    offset = extra["cfg"].slices.side_offset
    samples = located_crops(test.crops, extra["volumes"], test.studies(), offset)
    mirrored = located_crops(test.crops, _mirror(extra["volumes"]), test.studies(), offset)
    probs, mirror = grade(grader, samples, tta=tta), grade(grader, mirrored, tta=tta)
    labels = np.stack(label_vectors(test.labels(), test.studies(), CROPS))
    return probs, mirror, labels


def test_a_mirror_trained_grader_swaps_left_and_right_on_the_mirror(mirror_trained) -> None:  # type: ignore[no-untyped-def]
    probs, mirror, labels = _both(mirror_trained, tta=False)
    ok = ~np.isnan(probs[:, LEFT, 0])
    swapped = np.abs(mirror[:, LEFT] - probs[:, RIGHT])[ok].mean()
    kept = np.abs(mirror[:, LEFT] - probs[:, LEFT])[ok].mean()
    assert swapped < 0.05 and kept > 4 * swapped  # approximately the swap, far from "no swap"
    # and it learnt which side is which: the image's right half is the patient's left
    for side in (LEFT, RIGHT):
        y, p = labels[:, side], probs[:, side]
        graded = (y >= 0) & ~np.isnan(p[..., 0])
        assert (p[graded].argmax(axis=-1) == y[graded]).mean() > 0.8


def test_with_tta_the_mirror_is_exactly_the_swap(mirror_trained) -> None:  # type: ignore[no-untyped-def]
    probs, mirror, _ = _both(mirror_trained, tta=True)
    ok = ~np.isnan(probs[:, LEFT, 0])
    np.testing.assert_allclose(mirror[:, LEFT][ok], probs[:, RIGHT][ok], atol=1e-5)
    np.testing.assert_allclose(mirror[:, RIGHT][ok], probs[:, LEFT][ok], atol=1e-5)
    canal = [i for i, (c, _) in enumerate(AXIAL_TARGETS) if c == "spinal_canal_stenosis"]
    np.testing.assert_allclose(mirror[:, canal], probs[:, canal], atol=1e-5)


def _crops_table(rows: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.DataFrame(
        [(7, 1, i + 1, level, file) for i, (level, file) in enumerate(rows)],
        columns=["study_id", "series_id", "instance_number", "level", "file"],
    )


def test_label_vectors_follow_the_target_order(crops_folder: Path) -> None:
    folder = CropFolder.open(crops_folder, truth=True)
    (vector,) = label_vectors(folder.labels(), [2002], CROPS)
    assert vector[AXIAL_TARGETS.index(("left_subarticular_stenosis", "l1_l2"))] == -1  # blank
    row = folder.crops[(folder.crops.study_id == 2002) & (folder.crops.level == "l2_l3")].iloc[0]
    i = AXIAL_TARGETS.index(("spinal_canal_stenosis", "l2_l3"))
    assert vector[i] == ["normal_mild", "moderate", "severe"].index(row.spinal_canal_stenosis)


def test_a_point_moves_by_its_offset_in_mm_on_its_slice() -> None:
    import pandas as pd

    # a 100 x 100 PNG of a 200-row, 100-column original over 300 mm: 1.5 mm per original pixel,
    # so 1.5 mm per PNG column and 3 mm per PNG row
    vol = slice_volume(np.zeros((100, 100), np.uint8), (200, 100), 300.0)
    assert np.allclose(vol.spacing[:2], (1.5, 3.0))
    points = pd.DataFrame(
        {
            "study_id": [7],
            "series_id": [8],
            "instance_number": [9],
            "condition": ["left_neural_foraminal_narrowing"],
            "level": ["l4_l5"],
            "x": [40.0],
            "y": [60.0],
        }
    )
    files = {(7, 8, 9): "a.png"}
    (row,) = located_slices(points, files, {"a.png": vol}, [7], offset_mm=(3.0, -6.0))
    (moved,) = [loc for loc in row if loc is not None]
    assert (moved.x, moved.y) == (42.0, 58.0)  # 3 mm = 2 columns right, 6 mm = 2 rows up
    assert point_offsets(0.0) == [(0.0, 0.0)]
    assert point_offsets(2.0) == [(0.0, 0.0), (2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, -2.0)]


def test_given_points_replace_the_true_ones_for_the_training_studies_only(
    slices_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spinegrade.slices import grade as grade_module
    from spinegrade.slices.inputs import open_folder

    seen = {}

    def capture(model, train_set, val_set, out_dir, cfg, **kwargs):  # type: ignore[no-untyped-def]
        seen["train"], seen["val"] = train_set, val_set
        return Path(out_dir) / "model.pt"

    monkeypatch.setattr(grade_module, "fit_grader", capture)
    folder = open_folder(slices_folder, SLICES, truth=True)
    cfg = fast_config("slices_cpu")
    volumes = load_volumes(folder, cfg)
    studies = folder.studies()
    train_ids, val_ids = studies[:4], studies[4:]
    moved = folder.points.assign(x=folder.points["x"] + 5.0, y=folder.points["y"] - 3.0)
    labels = folder.labels()
    train_grader(folder, volumes, labels, train_ids, val_ids, "unused", cfg, points=moved)

    def centres(dataset) -> set[tuple[float, float]]:  # type: ignore[no-untyped-def]
        return {(loc.x, loc.y) for row in dataset.located for loc in row if loc is not None}

    true = folder.points.set_index("study_id")
    true_train = {(x, y) for x, y in true.loc[train_ids, ["x", "y"]].itertuples(index=False)}
    true_val = {(x, y) for x, y in true.loc[val_ids, ["x", "y"]].itertuples(index=False)}
    assert seen["train"].ids == train_ids and seen["val"].ids == val_ids
    assert centres(seen["train"]) == {(x + 5.0, y - 3.0) for x, y in true_train}
    assert centres(seen["val"]) == true_val  # the validation loss stays on the true points
