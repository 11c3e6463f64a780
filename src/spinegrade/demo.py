"""`spinegrade demo`: the whole pipeline on synthetic studies, end to end, on a laptop CPU.

Steps (each reuses what an earlier run of the demo left in the same folder):

1. ``data/``: `studies` synthetic studies (`spinegrade.data.synthetic.generate`, size small);
   reused when `data/oracle.csv` (written last) exists.
2. ``run/``: cross-validated training with the plan's config (`quick` by default, `demo` with
   `--thorough`; `spinegrade.cv.train.train`, which resumes an interrupted run and skips finished
   folds), then out-of-fold evaluation (`run/metrics.json`, `run/figures/`).
3. ``test_data/``: `test_studies` new synthetic studies from another seed (held out from
   everything), reused like ``data/``.
4. ``predictions/``: `spinegrade.inference.predict` on them (submission, reports, overlays,
   Grad-CAM maps);
   reused when its `submission.csv` is newer than the trained models.
5. The held-out submission is scored against the test labels, next to the oracle (`oracle.csv`,
   the best possible) and the constant prior of the training labels (the folds' `prior.csv`);
   everything is written to `demo.json`.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from spinegrade.config import load_config
from spinegrade.cv.folder import RunFolder
from spinegrade.cv.train import train
from spinegrade.data.synthetic import generate
from spinegrade.data.tables import load_tables
from spinegrade.io import write_json
from spinegrade.metrics import ScoreResult, read_submission, score, submission_rows

ORACLE_CSV, DEMO_JSON = "oracle.csv", "demo.json"
#: The demo's steps (the keys of `DemoResult.seconds`).
SYNTH_TRAIN, TRAIN = "synthesise training set", "train and evaluate"
SYNTH_TEST, PREDICT = "synthesise held-out set", "predict held-out set"


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
    trained: str = ""  #: how the models were trained, in one line

    @property
    def test_study_ids(self) -> list[int]:
        """The held-out studies that were predicted and scored."""
        return sorted(load_tables(self.test_data).labels["study_id"].astype(int))

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
            "trained": self.trained,
        }


@dataclass(frozen=True)
class DemoPlan:
    """How much the demo does: the default (`QUICK`) or `--thorough` (the demo before v0.2).

    `expected_s`: each step's wall time measured on 2 quiet CPU cores at these sizes; the demo
    scales it by the study counts asked for and announces it before the step.
    """

    studies: int
    test_studies: int
    folds: int
    config: str
    expected_s: dict[str, float]  #: each step's wall seconds, measured
    measured_at: tuple[int, int]  #: the (studies, test studies) `expected_s` was measured at

    def expected(self, step: str) -> float:
        """`step`'s expected seconds, scaled by the study counts against those measured."""
        train_n, test_n = self.measured_at
        scale = (
            self.studies / train_n if step in (SYNTH_TRAIN, TRAIN) else self.test_studies / test_n
        )
        return self.expected_s[step] * scale


QUICK = DemoPlan(
    studies=48,
    test_studies=10,
    folds=2,
    config="quick",
    expected_s={SYNTH_TRAIN: 35.0, TRAIN: 356.0, SYNTH_TEST: 9.0, PREDICT: 15.0},
    measured_at=(48, 10),
)
THOROUGH = DemoPlan(
    studies=80,
    test_studies=10,
    folds=2,
    config="demo",
    expected_s={SYNTH_TRAIN: 70.0, TRAIN: 1636.0, SYNTH_TEST: 10.0, PREDICT: 34.0},
    measured_at=(80, 10),
)


def resolve_plan(
    thorough: bool = False,
    *,
    studies: int | None = None,
    test_studies: int | None = None,
    folds: int | None = None,
    config: str | None = None,
) -> DemoPlan:
    """`QUICK`, or `THOROUGH` with `thorough`, with the sizes and config given (None keeps the
    plan's)."""
    asked = {"studies": studies, "test_studies": test_studies, "folds": folds, "config": config}
    return replace(
        THOROUGH if thorough else QUICK, **{k: v for k, v in asked.items() if v is not None}
    )


def demo(
    out_dir: str | Path = "spinegrade-demo",
    *,
    thorough: bool = False,
    studies: int | None = None,
    test_studies: int | None = None,
    folds: int | None = None,
    config: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> DemoResult:
    """Run (or resume) the demo in `out_dir`; see the module docstring for the steps.

    The plan is `QUICK` (a few minutes on 2 CPU cores) or, with `thorough`, `THOROUGH`; `studies`,
    `test_studies`, `folds` (`data.folds`) and `config` override it, `overrides` are config
    `key=value`s (e.g. `grade.optim.epochs=3`). `seed` makes the training set (the held-out set uses
    `seed + 1`); `workers` the processes for generation, training data loading and prediction.
    Each step says what it does and how long it is expected to take.
    """
    plan = resolve_plan(
        thorough, studies=studies, test_studies=test_studies, folds=folds, config=config
    )
    studies, test_studies, folds, config = plan.studies, plan.test_studies, plan.folds, plan.config
    out = Path(out_dir)
    cfg = load_config(config, [f"data.num_workers={workers}", f"data.folds={folds}", *overrides])
    paths = {
        "data": out / "data",
        "run_dir": out / "run",
        "test_data": out / "test_data",
        "predictions": out / "predictions",
    }
    what = {
        SYNTH_TRAIN: f"synthesise {studies} training studies",
        TRAIN: f"train and evaluate the {config!r} config: {folds} folds of {studies} studies, "
        "both stages, out-of-fold scores",
        SYNTH_TEST: f"synthesise {test_studies} new held-out studies",
        PREDICT: f"predict the {test_studies} held-out studies with the trained folds",
    }
    seconds: dict[str, float] = {}
    step = _Steps(what, {k: plan.expected(k) for k in what}, seconds, progress)
    with step(SYNTH_TRAIN):
        _synthetic(paths["data"], studies, seed, workers, progress)
    with step(TRAIN):
        summary = train(paths["data"], paths["run_dir"], cfg, progress=progress)
    with step(SYNTH_TEST):
        _synthetic(paths["test_data"], test_studies, seed + 1, workers, progress)
    with step(PREDICT):
        _predictions(paths["run_dir"], paths["test_data"], paths["predictions"], workers, progress)
    scores = held_out_scores(
        paths["test_data"], paths["predictions"] / "submission.csv", paths["run_dir"]
    )
    result = DemoResult(
        out,
        cv_metrics=summary.metrics,
        test_scores=scores,
        seconds=seconds,
        trained=f"{config!r} config, {folds} folds of {studies} synthetic studies "
        f"(localiser {cfg.localize.backbone} at {cfg.localize.image_size} px, "
        f"{cfg.localize.optim.epochs} epochs; grader {cfg.grade.backbone} on "
        f"{cfg.grade.crop_px} px crops, {cfg.grade.optim.epochs} epochs)",
        **paths,
    )
    write_json(out / DEMO_JSON, result.to_dict())
    return result


class _Steps:
    """`with steps(name):` announces the step (what, and its expected time), then its time."""

    def __init__(
        self,
        what: dict[str, str],
        expected_s: dict[str, float],
        seconds: dict[str, float],
        show: bool,
    ) -> None:
        self.what, self.expected_s, self.seconds, self.show = what, expected_s, seconds, show
        self.names = list(what)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        number = self.names.index(name) + 1
        left = sum(self.expected_s[n] for n in self.names[number - 1 :])
        if self.show:
            tqdm.write(
                f"demo step {number}/{len(self.names)}: {self.what[name]} (expected "
                f"{_duration(self.expected_s[name])}; about {_duration(left)} left in all, "
                f"as measured on 2 quiet CPU cores)"
            )
        with _timed(self.seconds, name):
            yield
        if self.show:
            tqdm.write(
                f"demo step {number}/{len(self.names)} done in {_duration(self.seconds[name])}"
            )


def _duration(seconds: float) -> str:
    """`45 s`, `3 min`, `1 h 5 min`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


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
    # at most `workers`, and as many as `predict` would choose on this machine
    predict(
        run_dir,
        test_data / "train_images",
        out,
        workers=min(workers, default_workers()),
        progress=progress,
        cam=True,
    )


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall time to `seconds[name]`."""
    t0 = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - t0
