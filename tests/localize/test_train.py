"""A tiny end-to-end run on phantom studies: train, resume from last.pt, locate, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import spinegrade.training.loop as loop
from spinegrade.cli import app
from spinegrade.config import load_config
from spinegrade.constants import TARGETS
from spinegrade.data.cache import cache_path, load_cached
from spinegrade.localize.dataset import SAGITTAL_CHANNELS
from spinegrade.localize.evaluate import REPORT_JSON, REPORT_PNG, evaluate_localizer
from spinegrade.localize.predict import Localizer
from spinegrade.localize.train import train_localizer


@pytest.mark.slow
def test_tiny_training_resumes_and_locates(
    phantom_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    cfg = load_config(
        "tiny",
        ["localize.optim.epochs=2", "localize.image_size=32", "data.num_workers=0", "device=cpu"],
    )
    out = tmp_path / "run" / "localize"
    real_epoch = loop._train_one_epoch
    calls = {"n": 0}

    def crash_on_second_epoch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_one_epoch", crash_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_localizer(phantom_root, [101, 102, 103], out, cfg, progress=False)
    last = torch.load(out / "sagittal" / "last.pt", weights_only=False)
    assert last["epoch"] == 1 and not (out / "sagittal" / "model.pt").exists()
    first_epoch = last["history"][0]

    monkeypatch.setattr(loop, "_train_one_epoch", real_epoch)
    assert train_localizer(phantom_root, [101, 102, 103], out, cfg, progress=False) == out
    history = json.loads((out / "sagittal" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[
        0
    ] == first_epoch  # resumed, not redone
    assert not (out / "sagittal" / "last.pt").exists() and (out / "axial" / "model.pt").is_file()

    localizer = Localizer.load(out, "cpu")
    assert (
        localizer.sagittal.module.spec.channels == SAGITTAL_CHANNELS
        and localizer.cfg.image_size == 32
    )
    table = localizer.locate(load_cached(cache_path(tmp_path / "run" / "cache", 101)))
    assert list(zip(table.condition, table.level)) == list(TARGETS)

    bad = tmp_path / "555"
    bad.mkdir()
    csv = tmp_path / "located.csv"
    result = CliRunner().invoke(
        app,
        [
            "localize",
            "predict",
            str(out),
            str(phantom_root / "train_images" / "102"),
            str(bad),
            "--out",
            str(csv),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "555" in result.output
    located = pd.read_csv(csv)
    assert len(located) == 25 and set(located.condition) >= {
        "Spinal Canal Stenosis",
        "Left Subarticular Stenosis",
    }
    assert set(located.level) == {"L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"}

    report = evaluate_localizer(
        phantom_root, out, [104], [101, 102, 103], tmp_path / "eval", cfg, progress=False
    )
    assert report["studies"] == 1 and report["model"]["overall"]["points"] == 25
    assert report["baseline"]["overall"]["missed"] == 0
    assert (tmp_path / "eval" / REPORT_JSON).is_file() and (
        tmp_path / "eval" / REPORT_PNG
    ).stat().st_size > 0
