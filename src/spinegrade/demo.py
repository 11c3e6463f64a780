"""`spinegrade demo`: the whole pipeline on synthetic studies, end to end, on a laptop CPU.

Steps (each reuses what an earlier run of the demo left in the same folder):

1. ``data/``: `studies` synthetic studies (`spinegrade.data.synthetic.generate`, size small);
   reused when `data/oracle.csv` (written last) exists.
2. ``run/``: cross-validated training with the `demo` config (`spinegrade.cv.train.train`,
   which resumes an interrupted run and skips finished folds), then out-of-fold evaluation
   (`run/metrics.json`, `run/figures/`).
3. ``test_data/``: `test_studies` new synthetic studies from another seed (held out from
   everything), reused like ``data/``.
4. ``predictions/``: `spinegrade.inference.predict` on them (submission, reports, overlays);
   reused when its `submission.csv` is newer than the trained models.
5. The held-out submission is scored against the test labels, next to the oracle (`oracle.csv`,
   the best possible) and the constant prior of the training labels (`run/prior.csv`);
   everything is written to `demo.json`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spinegrade.config import load_config
from spinegrade.cv.folder import RunFolder
from spinegrade.cv.train import train
from spinegrade.data.synthetic import generate
from spinegrade.data.tables import load_tables
from spinegrade.io import write_json
from spinegrade.metrics import ScoreResult, read_submission, score, submission_rows

ORACLE_CSV, DEMO_JSON = "oracle.csv", "demo.json"


@dataclass
class DemoResult:
    """Where the demo's outputs are, and the held-out scores (model, prior, oracle)."""

    out_dir: Path
    data: Path
    run_dir: Path
    test_data: Path
    predictions: Path
    cv_metrics: dict[str, Any]
    test_scores: dict[str, ScoreResult]  #: "model", "prior", "oracle" on the held-out studies
    seconds: dict[str, float] = field(default_factory=dict)  #: per step (0 when reused)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (written as `demo.json`)."""
        return {
            "paths": {
                k: str(getattr(self, k)) for k in ("data", "run_dir", "test_data", "predictions")
            },
            "held_out": {k: v.to_dict() for k, v in self.test_scores.items()},
            "cross_validation": {
                "model": self.cv_metrics.get("model", {}).get("score"),
                "prior": self.cv_metrics.get("prior"),
                "oracle": self.cv_metrics.get("oracle"),
            },
            "seconds": self.seconds,
        }


def demo(
    out_dir: str | Path = "spinegrade-demo",
    *,
    studies: int = 80,
    test_studies: int = 10,
    folds: int = 2,
    config: str = "demo",
    overrides: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> DemoResult:
    """Run (or resume) the demo in `out_dir`; see the module docstring for the steps.

    `config` / `overrides` choose the training config (e.g. `tiny`, `grade.optim.epochs=3`);
    `folds` the cross-validation folds (`data.folds`; 2 by default, for a demo of about 15 minutes
    on 2 CPU cores: training time grows with folds x (folds - 1) / folds, so 5 folds take about 4
    times as long); `seed` the
    training set (the held-out set uses `seed + 1`); `workers` the processes for generation,
    training data loading and prediction.
    """
    out = Path(out_dir)
    cfg = load_config(config, [f"data.num_workers={workers}", f"data.folds={folds}", *overrides])
    paths = {
        "data": out / "data",
        "run_dir": out / "run",
        "test_data": out / "test_data",
        "predictions": out / "predictions",
    }
    seconds: dict[str, float] = {}
    with _timed(seconds, "synthesise training set"):
        _synthetic(paths["data"], studies, seed, workers, progress)
    with _timed(seconds, "train and evaluate"):
        summary = train(paths["data"], paths["run_dir"], cfg, progress=progress)
    with _timed(seconds, "synthesise held-out set"):
        _synthetic(paths["test_data"], test_studies, seed + 1, workers, progress)
    with _timed(seconds, "predict held-out set"):
        _predictions(paths["run_dir"], paths["test_data"], paths["predictions"], workers, progress)
    scores = held_out_scores(
        paths["test_data"], paths["predictions"] / "submission.csv", paths["run_dir"]
    )
    result = DemoResult(
        out, cv_metrics=summary.metrics, test_scores=scores, seconds=seconds, **paths
    )
    write_json(out / DEMO_JSON, result.to_dict())
    return result


def held_out_scores(test_data: Path, submission: Path, run_dir: Path) -> dict[str, ScoreResult]:
    """Challenge scores on the held-out labels of the submission, the oracle and the run's prior."""
    labels = load_tables(test_data).labels
    prior = RunFolder(run_dir).ensemble_prior()  # what predict falls back to
    prior_sub = pd.concat(
        [submission_rows(s, prior) for s in labels["study_id"]], ignore_index=True
    )
    return {
        "model": score(labels, read_submission(submission)),
        "prior": score(labels, prior_sub),
        "oracle": score(labels, read_submission(test_data / ORACLE_CSV)),
    }


def _synthetic(folder: Path, n: int, seed: int, workers: int, progress: bool) -> None:
    """Generate `n` studies into `folder` unless a complete set (oracle.csv written last) is
    there."""
    if (folder / ORACLE_CSV).is_file():
        return
    if folder.exists():  # an interrupted generation of the demo's own folder: start it again
        shutil.rmtree(folder)
    generate(folder, n, seed, size="small", workers=workers, progress=progress)


def _predictions(run_dir: Path, test_data: Path, out: Path, workers: int, progress: bool) -> None:
    """Predict the held-out set unless a submission newer than every trained model exists."""
    from spinegrade.inference import predict
    from spinegrade.inference.run import default_workers

    sub = out / "submission.csv"
    models = list(run_dir.glob("fold_*/grader/model.pt")) + list(
        run_dir.glob("fold_*/localizer/*/model.pt")
    )
    if sub.is_file() and models and sub.stat().st_mtime > max(p.stat().st_mtime for p in models):
        return
    # at most `workers`, and none on small machines, where the pipeline is slower than one process
    predict(
        run_dir,
        test_data / "train_images",
        out,
        workers=min(workers, default_workers()),
        progress=progress,
    )


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall time to `seconds[name]`."""
    t0 = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - t0
