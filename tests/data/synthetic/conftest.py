"""Fixtures of the synthetic-study tests: the label source, a bare clone, one small generated
set."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from spinegrade.data.synthetic import LabelModel, RealLabels, SynthSummary, generate
from spinegrade.data.synthetic import source as source_module
from spinegrade.data.synthetic.generate import StudyJob
from spinegrade.data.synthetic.labels import READER_NOISE
from spinegrade.data.synthetic.source import LABELS_ENV, LabelSource

SEED = 11


@pytest.fixture(scope="session")
def label_source(request: pytest.FixtureRequest) -> LabelSource:
    """The real train.csv rows where ../shared is at hand (the `rsna` fixture), else the bundled
    label model: what a checkout without ../shared draws from."""
    try:
        root = request.getfixturevalue("rsna")
    except pytest.skip.Exception:
        return LabelModel.load()
    return RealLabels.load(root)


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh clone: $SPINEGRADE_RSNA_DIR names an empty folder and the repository sits where
    neither `shared/` nor `../shared/` exists, so no real train.csv can be found."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(LABELS_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(source_module, "REPO", tmp_path / "clone" / "repo")


@pytest.fixture(scope="session")
def synth(
    tmp_path_factory: pytest.TempPathFactory, label_source: LabelSource
) -> tuple[Path, SynthSummary]:
    """Two small studies of seed :data:`SEED` from `label_source`, generated once."""
    out = tmp_path_factory.mktemp("synth") / "a"
    return out, generate(out, 2, SEED, labels=label_source, progress=False)


def study_job(
    out: Path, index: int, source: LabelSource, counts: tuple[int, int, int] | None = None
) -> StudyJob:
    """The job `generate` made for study `index` of the set in `out` (or a new one)."""
    ids = (
        pd.read_csv(out / "train.csv")["study_id"].tolist()
        if (out / "train.csv").exists()
        else [123 + index]
    )
    study_id = int(ids[index]) if index < len(ids) else 123
    return StudyJob(out, SEED, index, study_id, "small", source, READER_NOISE, counts)


def hash_folder(folder: Path) -> str:
    """SHA-256 over the relative paths and bytes of every file under `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
