"""Finding the real label files, and falling back to the bundled label model without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinegrade.data.synthetic import (
    LabelModel,
    RealLabels,
    SynthSummary,
    find_labels_root,
    label_source,
)
from spinegrade.data.synthetic.generate import draw_labels
from spinegrade.data.synthetic.labels import READER_NOISE
from spinegrade.data.synthetic.source import LABELS_ENV
from spinegrade.errors import DataError


def test_bare_clone_finds_nothing_and_falls_back(bare: None) -> None:
    assert find_labels_root() is None
    source = label_source()
    assert isinstance(source, LabelModel) and source.name == LabelModel.load().name


def test_environment_folder_is_found(
    synth: tuple[Path, SynthSummary], bare: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = synth
    monkeypatch.setenv(LABELS_ENV, str(out))
    assert find_labels_root() == out
    assert isinstance(label_source(), RealLabels) and label_source().name.endswith("train.csv")


def test_explicit_folder_without_train_csv_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no train.csv"):
        find_labels_root(tmp_path)
    with pytest.raises(DataError, match="no train.csv"):
        label_source(tmp_path)


def test_real_labels_draw_rows_and_layouts_of_their_folder(
    synth: tuple[Path, SynthSummary],
) -> None:
    """A folder in the RSNA layout (here a generated one) as a source: each study gets one of
    its rows (the same for the same seed), and its studies' series counts are the layouts."""
    out, summary = synth
    source = label_source(out)
    assert (
        isinstance(source, RealLabels) and source.name == f"real train.csv at {out / 'train.csv'}"
    )
    assert source.layout_rows().shape == (2, 3) and source.layout_rows().sum() == summary.n_series
    for index in range(8):
        _, row, codes, z = draw_labels(0, index, source, READER_NOISE)
        assert 0 <= row < 2 and np.array_equal(codes, source.rows.codes[row]) and z.shape == (25,)
        assert np.array_equal(draw_labels(0, index, source, READER_NOISE)[3], z)
    assert source.priors() == pytest.approx(source.rows.priors())
