"""Finding studies: RSNA images folders, one study folder, loose files grouped by UID; study ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from spinegrade.dicom import read_header
from spinegrade.inference import discover_studies, uid_to_id
from spinegrade.inference.discover import IMAGES, LOOSE, STUDY, load_source


def test_loose_files_are_grouped_by_uid(tiny: dict[str, Path], tmp_path: Path) -> None:
    """Files of two studies mixed in one folder tree with meaningless names: grouped by UID."""
    images = tiny["data"] / "train_images"
    studies = sorted(int(d.name) for d in images.iterdir())[:2]
    loose = tmp_path / "dump"
    files = sorted(p for s in studies for p in (images / str(s)).rglob("*.dcm"))
    rng = np.random.default_rng(0)
    for i, j in enumerate(rng.permutation(len(files))):
        dest = loose / ("a" if i % 2 else "b/c") / f"img{i:04d}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[j], dest)
    (loose / "README.txt").write_text("not DICOM")

    found = discover_studies(loose)
    assert found.layout == LOOSE
    assert [p.name for p, _ in found.ignored] == ["README.txt"]
    uids = {read_header(next((images / str(s)).rglob("*.dcm"))).study_uid: s for s in studies}
    assert sorted(s.study_id for s in found.studies) == sorted(uid_to_id(u) for u in uids)
    for source in found.studies:
        study = load_source(source)
        original = next(s for u, s in uids.items() if uid_to_id(u) == source.study_id)
        expected = load_source(discover_studies(images / str(original)).studies[0])
        assert sorted(s.series_type for s in study.series) == sorted(
            s.series_type for s in expected.series
        )
        for s in study.series:  # same stacks, same slice order, whatever the file names
            twin = next(
                e
                for e in expected.series
                if e.stacks[0].meta.series_uid == s.stacks[0].meta.series_uid
            )
            assert [v.shape for v in s.stacks] == [v.shape for v in twin.stacks]
            for a, b in zip(s.stacks, twin.stacks):
                np.testing.assert_array_equal(a.instance_numbers, b.instance_numbers)
                np.testing.assert_array_equal(a.pixels, b.pixels)
                np.testing.assert_allclose(a.affine, b.affine)


def test_layouts_and_study_ids(tiny: dict[str, Path], tmp_path: Path) -> None:
    images = tiny["data"] / "train_images"
    found = discover_studies(images)
    assert found.layout == IMAGES
    assert [s.study_id for s in found.studies] == sorted(int(d.name) for d in images.iterdir())
    assert (
        found.series_descriptions is not None
    )  # train_series_descriptions.csv beside train_images/
    one = discover_studies(images / str(tiny["complete"]))
    assert one.layout == STUDY and [s.study_id for s in one.studies] == [tiny["complete"]]
    named = tmp_path / "patient_a"  # a study folder whose name is not a number: id from the UID
    shutil.copytree(images / str(tiny["complete"]), named)
    uid = read_header(next(named.rglob("*.dcm"))).study_uid
    assert [s.study_id for s in discover_studies(named).studies] == [uid_to_id(uid)]
    assert uid_to_id(uid) == uid_to_id(uid) and 0 <= uid_to_id(uid) < 2**32
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="empty"):
        discover_studies(empty)
