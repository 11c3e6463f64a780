"""The worker's read: a study, or the one-line reason it cannot be used, with the time it took."""

from __future__ import annotations

from pathlib import Path

from spinegrade.dicom import Study
from spinegrade.inference.discover import StudySource
from spinegrade.inference.worker import read_study
from tests.conftest import MakeStudy


def test_a_good_study_is_read_and_timed(make_study: MakeStudy) -> None:
    folder = make_study(1001)
    study, timing = read_study(StudySource(1001, folder), None)
    assert isinstance(study, Study) and study.study_id == 1001 and len(study.series) == 3
    assert timing.wall["read"] > 0


def test_a_bad_study_gives_its_reason_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "1002" / "7"
    folder.mkdir(parents=True)
    (folder / "1.dcm").write_bytes(b"not a dicom file " * 20)
    reason, timing = read_study(StudySource(1002, folder.parent), None)
    assert isinstance(reason, str) and "not a readable DICOM file" in reason
    assert "\n" not in reason and "read" in timing.wall
