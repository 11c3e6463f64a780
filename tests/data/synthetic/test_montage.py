"""Montages of labelled points by severity."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from spinegrade.constants import SAGITTAL_T2
from spinegrade.data.synthetic import SynthSummary, montage
from spinegrade.errors import DataError


def test_montage_of_a_generated_set(synth: tuple[Path, SynthSummary], tmp_path: Path) -> None:
    out, _ = synth
    png = montage(out, SAGITTAL_T2, tmp_path / "m.png", examples=2)
    width, height = Image.open(png).size
    assert (width, height) == (round(3.2 * 4 * 80), round(3.4 * 3 * 80))  # 3 x (2 x 2) panels
    with pytest.raises(DataError, match="unknown series type"):
        montage(out, "Coronal", tmp_path / "x.png")
