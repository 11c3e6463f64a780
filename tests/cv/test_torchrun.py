"""`torchrun --nproc-per-node 2 -m spinegrade train` on CPU (gloo): two processes train one fold.

The check: each rank predicts its share of the held-out studies (`fold.json` says which) with the
fold's checkpoints, and rank 0 gathers the shares. Re-predicting rank 1's studies here, in a single
process from rank 0's checkpoints, must give exactly what rank 1 wrote into the OOF file; and both
ranks must have trained on the same folds (one `folds.csv`, every held-out study predicted once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.constants import SEVERITIES
from spinegrade.cv.folder import FOLD_JSON, OOF_PREDICTIONS, RunFolder
from spinegrade.cv.train import predict_fold
from spinegrade.data.cache import cache_studies
from spinegrade.data.synthetic import generate
from spinegrade.data.tables import load_tables

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.slow
def test_two_process_ddp_run_agrees_with_a_single_process(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    generate(data, 8, seed=3, size="small", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "spinegrade",
            "train",
            str(data),
            "--out",
            str(run),
            "--config",
            "tiny",
            "--folds",
            "0",
            "grade.optim.epochs=2",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2
    fold = json.loads((run / "fold_0" / FOLD_JSON).read_text())
    shares = fold["predicted_by_rank"]
    folds = pd.read_csv(run / "folds.csv")
    held = sorted(folds.study_id[folds.fold == 0])
    assert set(shares) == {"0", "1"} and all(shares.values())
    assert sorted(shares["0"] + shares["1"]) == held  # each held-out study once, no overlap

    tables = load_tables(data)
    cached = cache_studies(
        data / "train_images", held, run / "cache", tables.series, progress=False
    )
    # float32 networks: each rank ran on one thread; another thread count sums in another order
    # (differences up to ~1e-5), so rank 1's share is predicted here on one thread as well
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = predict_fold(
            RunFolder(run),
            0,
            shares["1"],
            cached,
            tables.coordinates,
            None,
            device="cpu",
            progress=False,
        ).predictions
    finally:
        torch.set_num_threads(threads)
    written = pd.read_csv(run / OOF_PREDICTIONS).set_index("row_id").loc[again["row_id"]]
    np.testing.assert_allclose(
        written[list(SEVERITIES)].to_numpy(), again[list(SEVERITIES)].to_numpy(), rtol=0, atol=1e-6
    )
    assert json.loads((run / "metrics.json").read_text())["folds"] == [0]
