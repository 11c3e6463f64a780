"""`predict`: a trained run folder and a folder of studies in, submission + reports out.

Pipeline. Studies are read (DICOM decoded, stacks built) in `workers` processes, a few studies
ahead of the model; the models (every fold, see `cv.ensemble`) run in this process; each
study's predictions.json, overlays and report.html are written by the same worker processes while
the model goes on with the next study. The workers are forked (Linux) and the first reads are
queued before the models are loaded; while they run, the models use the cores they leave. A
study that cannot be read, or that the models fail on, gets the prior in the submission, a row in
errors.csv, a report saying so, and the batch goes on.

`workers=None` picks `default_workers()`: none for a single study or on one core, else at least 2
(on 2 cores the pipeline with forked workers measured 1.15x-1.69x the plain loop; see
docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from spinegrade.cv.ensemble import TORCH, Ensemble, StudyPrediction, prior_prediction
from spinegrade.dicom import Study
from spinegrade.errors import SpinegradeError
from spinegrade.inference.discover import Discovery, StudySource, discover_studies
from spinegrade.inference.outputs import (
    errors_frame,
    prediction_record,
    write_errors,
    write_submission,
)
from spinegrade.inference.worker import read_study, render_job
from spinegrade.report.overlays import study_panels
from spinegrade.report.study_report import write_index
from spinegrade.timing import Timing

if TYPE_CHECKING:  # highdicom is imported only with dicom_out (it costs ~1 s)
    from spinegrade.inference.dicom_out import DicomJob, Provenance

STAGES = ("read", "prepare", "localize", "grade", "cam", "write")


@dataclass
class PredictResult:
    """What `predict` wrote and how long it took.

    `timing` sums each stage (`STAGES`) over the studies, as wall and CPU seconds (stages overlap
    in time when `workers > 0`, and CPU time is not inflated by other programs on the machine);
    `wall_s` is the elapsed time of the whole batch after the studies were found: model loading
    (`load_s`, which overlaps the workers' start-up) included.
    """

    out_dir: Path
    submission: Path
    errors: Path
    index: Path
    study_ids: list[int]
    failed: pd.DataFrame  #: errors.csv rows: study_id, path, reason
    timing: Timing = field(default_factory=Timing)
    wall_s: float = 0.0
    load_s: float = 0.0
    #: from the start until the model had its first study (after loading and worker start-up)
    first_study_s: float = 0.0
    fail_on_error: bool = False

    @property
    def studies_per_s(self) -> float:
        """Studies predicted per second of wall time."""
        return len(self.study_ids) / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def exit_code(self) -> int:
        """1 when `fail_on_error` was asked and a study failed, else 0."""
        return int(self.fail_on_error and self.failed["study_id"].notna().any())


def predict(
    run_dir: str | Path,
    studies: str | Path,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    tta: bool = False,
    fail_on_error: bool = False,
    series_descriptions: str | Path | None = None,
    device: str | None = None,
    folds: list[int] | None = None,
    progress: bool = True,
    dicom_out: bool = False,
    engine: str = TORCH,
    onnx_dir: str | Path | None = None,
    cam: bool = False,
) -> PredictResult:
    """Predict every study under `studies` with the trained run `run_dir`; write into `out_dir`.

    `studies`: an RSNA images folder, one study folder, or DICOM files in any arrangement (see
    `inference.discover`). `workers` processes read studies and write reports (0: all in this
    process; None: `default_workers()`). `tta` averages with the left/right-mirrored crops. `folds`
    restricts the ensemble. `dicom_out` also writes each study's DICOM SR and overlay images
    (`inference.dicom_out`). `engine` runs the networks with torch or, from `onnx_dir` (default
    `RUN/onnx`, see `spinegrade export`), ONNX Runtime. `cam` adds a Grad-CAM map per graded
    target (`studies/<id>/cam/<row_id>.png`, in predictions.json and report.html; stage "cam"),
    from the torch checkpoints whatever the engine. While workers run, the models use the
    cores the workers leave (`model_threads`). The batch never stops at a bad study: see
    `PredictResult.failed` and `exit_code`.
    """
    out_dir = Path(out_dir)
    found = discover_studies(  # before torch starts threads
        studies, series_descriptions, workers=default_workers() if workers is None else workers
    )
    workers = default_workers(studies=len(found.studies)) if workers is None else workers
    errors: list[tuple[int | None, str, str]] = [
        (None, str(p), f"ignored: {why}") for p, why in found.ignored
    ]
    timing = Timing(dict.fromkeys(STAGES, 0.0), dict.fromkeys(STAGES, 0.0))
    preds: list[StudyPrediction] = []
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    with _pool(workers) as pool, _threads(model_threads(workers)):
        reads = _read_ahead(pool, found, ahead=max(2, workers + 1))  # the workers start now
        ensemble = Ensemble.load(
            run_dir, device=device, folds=folds, engine=engine, onnx_dir=onnx_dir, cam=cam
        )
        load_s = time.perf_counter() - start
        model = {
            "run_dir": str(Path(run_dir).resolve()),
            "folds": [f.fold for f in ensemble.folds],
            "tta": tta,
            "engine": engine,
            "cam": cam,
        }
        provenance = _provenance(run_dir, model["folds"], tta) if dicom_out else None
        writes: list[Future[Timing]] = []
        bar = tqdm(total=len(found.studies), desc="predict", unit="study", disable=not progress)
        first_study_s = 0.0
        for source, loaded, read_timing in reads:
            first_study_s = first_study_s or time.perf_counter() - start
            timing.add(read_timing)
            pred, record, panels, error = _predict_one(ensemble, source, loaded, model, tta, cam)
            if error:
                errors.append((source.study_id, str(source.path), error))
            job, dicom_error = _plan_dicom(provenance, source, loaded, record, panels)
            if dicom_error:
                errors.append((source.study_id, str(source.path), dicom_error))
            timing.add(pred.timing)
            preds.append(pred)
            records.append(record)
            writes.append(pool.submit(render_job, out_dir, record, panels, job, pred.cams))
            bar.update()
        bar.close()
        with timing.measure("write"):
            submission = write_submission(out_dir / "submission.csv", preds)
        for w, record in zip(writes, records):
            try:
                timing.add(w.result())
            except SpinegradeError as exc:  # the DICOM outputs (the report itself was written)
                errors.append((record["study_id"], record["path"], str(exc)))
            except Exception as exc:  # noqa: BLE001 - a report that cannot be drawn must not lose the batch
                errors.append(
                    (record["study_id"], record["path"], f"report not written: {_one_line(exc)}")
                )
    with timing.measure("write"):
        errors_path = write_errors(out_dir / "errors.csv", errors)
        failed = errors_frame(errors)
        wall = time.perf_counter() - start
        facts = {
            "studies": len(preds),
            "failed": int(failed["study_id"].notna().sum()),
            "flagged targets": sum(1 for r in records for t in r["targets"] if t["flags"]),
            "folds": len(ensemble.folds),
            "studies / s": round(len(preds) / wall, 3) if wall > 0 else "-",
        }
        index = write_index(out_dir / "index.html", records, failed, facts)
    return PredictResult(
        out_dir,
        submission,
        errors_path,
        index,
        [p.study_id for p in preds],
        failed,
        timing,
        time.perf_counter() - start,
        load_s,
        first_study_s,
        fail_on_error,
    )


def _predict_one(
    ensemble: Ensemble,
    source: StudySource,
    loaded: Study | str,
    model: dict[str, Any],
    tta: bool,
    cam: bool = False,
) -> tuple[StudyPrediction, dict[str, Any], dict[str, list], str]:
    """Prediction, record, overlay panels and error ("" when fine) of one read study."""
    if not isinstance(loaded, str):
        try:
            pred = ensemble.predict(loaded, tta=tta, cam=cam)
        except SpinegradeError as exc:
            loaded = str(exc)
        except Exception as exc:  # noqa: BLE001 - one study's failure must not stop the batch
            loaded = f"unexpected error while predicting: {_one_line(exc)}"
            traceback.print_exc()
        else:
            record = prediction_record(pred, source.path, loaded, model)
            try:
                return pred, record, study_panels(loaded, pred.targets), ""
            except Exception as exc:  # noqa: BLE001 - the prediction stands without its pictures
                return pred, record, {}, f"overlays not drawn: {_one_line(exc)}"
    pred = prior_prediction(source.study_id, ensemble.prior, loaded)
    return pred, prediction_record(pred, source.path, None, model, error=loaded), {}, loaded


def _provenance(run_dir: str | Path, folds: list[int], tta: bool) -> Provenance:
    from spinegrade.inference.dicom_out import run_provenance

    return run_provenance(run_dir, folds, tta)


def _plan_dicom(
    provenance: Provenance | None,
    source: StudySource,
    loaded: Study | str,
    record: dict[str, Any],
    panels: dict[str, list],
) -> tuple[DicomJob | None, str]:
    """The study's DICOM job (None without `--dicom-out` or for a failed study) and an error."""
    if provenance is None:
        return None, ""
    from spinegrade.inference.dicom_out import plan_dicom

    study = loaded if isinstance(loaded, Study) else None
    try:
        overlays = [name for name, p in panels.items() if p]
        return plan_dicom(study, source, record, overlays, provenance), ""
    except SpinegradeError as exc:
        record["dicom"] = {"files": {}, "reason": f"no DICOM SR: {exc}"}
        return None, f"no DICOM SR: {exc}"


def _read_ahead(
    pool: Executor, found: Discovery, ahead: int
) -> Iterator[tuple[StudySource, Study | str, Timing]]:
    """`(source, study or error, timing)` in discovery order, reading up to `ahead` studies early.

    The first `ahead` reads are submitted at once, before the first item is asked for.
    """
    table = found.series_descriptions

    def read(source: StudySource) -> Future:
        own = None if table is None else table[table["study_id"] == source.study_id]
        return pool.submit(read_study, source, own)

    sources = iter(found.studies)
    pending: deque[tuple[StudySource, Future]] = deque()
    for source in sources:
        pending.append((source, read(source)))
        if len(pending) >= ahead:
            break

    def results() -> Iterator[tuple[StudySource, Study | str, Timing]]:
        while pending:
            source, fut = pending.popleft()
            nxt = next(sources, None)
            if nxt is not None:
                pending.append((nxt, read(nxt)))
            yield (source, *fut.result())

    return results()


def cpu_cores() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers(cores: int | None = None, studies: int | None = None) -> int:
    """Worker processes for `predict`: none for a single study (nothing to overlap), else
    by the core count (docs/benchmarks.md: the measurements behind it)."""
    cores = cpu_cores() if cores is None else cores
    if studies is not None and studies < 2:
        return 0
    return 0 if cores < 2 else max(2, min(4, cores // 2))


def model_threads(workers: int, cores: int | None = None) -> int:
    """Threads for the models while `workers` processes read and write: the cores left, at least
    one; with no workers 0, meaning torch's own setting."""
    cores = cpu_cores() if cores is None else cores
    return max(1, cores - workers) if workers > 0 else 0


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """torch (and so ONNX Runtime, which follows it) on `n` threads inside the block (0: as is)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Inline(Executor):
    """An executor that runs each call at once in this process (`workers=0`)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        fut: Future = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def _pool(workers: int) -> Executor:
    """The reading and writing processes (an inline executor for none).

    On Linux they are forked from this process, which has imported everything they use: they
    start in milliseconds (a forkserver had to import pydicom, pandas and matplotlib first: ~6 s
    on 2 cores). ProcessPoolExecutor forks all of them at the first read, before the models are
    loaded; they run no torch or ONNX Runtime, so the thread pools those keep in this process
    (from an earlier batch) are not missed in them. Elsewhere fork is unsafe, and a forkserver
    that preloads the worker module is used.
    """
    if workers <= 0:
        return _Inline()
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("fork")
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["spinegrade.inference.worker"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["STAGES", "PredictResult", "default_workers", "model_threads", "predict"]
