"""The preprocessed study cache: round trip, reuse, invalidation, bad studies skipped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from spinegrade.data.cache import cache_path, cache_studies, load_cached
from spinegrade.data.tables import load_tables
from spinegrade.dicom import load_study
from spinegrade.errors import DataError
from tests.localize.phantom_spine import write_phantom_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_phantom_root(tmp_path / "rsna", n=2)


def test_cached_study_equals_the_dicom_study(root: Path, tmp_path: Path) -> None:
    series = load_tables(root).series
    result = cache_studies(
        root / "train_images", [101, 102], tmp_path / "cache", series, progress=False
    )
    assert result.built == 2 and not result.failed
    direct = load_study(root / "train_images" / "101", series)
    cached = load_cached(result.paths[101])
    assert cached.study_id == 101 and len(cached.series) == len(direct.series) == 3
    for a, b in zip(direct.series, cached.series):
        assert (a.series_id, a.series_type, a.description, a.note) == (
            b.series_id,
            b.series_type,
            b.description,
            b.note,
        )
        assert len(a.stacks) == len(b.stacks)
        for va, vb in zip(a.stacks, b.stacks):
            assert va.pixels.dtype == vb.pixels.dtype and np.array_equal(va.pixels, vb.pixels)
            assert np.array_equal(va.affine, vb.affine)
            assert np.array_equal(va.instance_numbers, vb.instance_numbers)
            assert va.meta == vb.meta
            assert va.sop_instance_uids == vb.sop_instance_uids
            assert len(set(va.sop_instance_uids)) == va.shape[0]
            assert va.sop_class_uids == vb.sop_class_uids and all(va.sop_class_uids)
    assert [len(s.stacks) for s in cached.series] == [1, 1, 2]  # the axial series keeps both stacks


def test_entries_are_reused_and_rebuilt_when_a_file_changes(root: Path, tmp_path: Path) -> None:
    images, cache = root / "train_images", tmp_path / "cache"
    cache_studies(images, [101, 102], cache, progress=False)
    again = cache_studies(images, [101, 102], cache, progress=False)
    assert again.built == 0 and set(again.paths) == {101, 102}
    some_file = next((images / "102" / "2").glob("*.dcm"))
    st = some_file.stat()
    os.utime(some_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = cache_studies(images, [101, 102], cache, progress=False)
    assert third.built == 1 and set(third.paths) == {101, 102}


def test_bad_studies_are_skipped_with_a_reason_and_the_rest_cached(
    root: Path, tmp_path: Path
) -> None:
    bad = root / "train_images" / "999" / "1"
    bad.mkdir(parents=True)
    (bad / "1.dcm").write_bytes(b"not dicom")
    result = cache_studies(
        root / "train_images", [101, 999, 555], tmp_path / "cache", workers=2, progress=False
    )
    assert set(result.paths) == {101}
    assert "555" in result.failed[555] and "not found" in result.failed[555]
    assert "999" in result.failed[999]


def test_unreadable_cache_file_is_a_one_line_data_error(tmp_path: Path) -> None:
    path = cache_path(tmp_path, 7)
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="7.npz: unreadable cache file"):
        load_cached(path)
    with pytest.raises(DataError, match="not found"):
        load_cached(cache_path(tmp_path, 8))
