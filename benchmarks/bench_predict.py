"""Benchmark: `spinegrade predict`, plain loop against the parallel path, torch against ONNX, in one
run.

Every method runs exactly the same steps per study (read the DICOM, prepare the stacks, localise,
grade, write predictions.json, overlays and report.html; then submission.csv and index.html):
the plain loop does them one after the other in one process (`workers=0`); the parallel path reads
and writes in `--workers` processes while the models run in this one on the cores the workers
leave. Each is run with each engine: torch (the checkpoints) and onnx (ONNX Runtime on the
networks of `spinegrade export`, exported first into a temporary folder unless RUN/onnx exists).
Printed: seconds per study of each stage, wall and CPU (summed over studies; in the parallel path
the stages overlap in time; CPU time counts every thread of this process, not the workers'), wall
seconds per study, studies per second, model loading and when the first study reached the
models; then the load average of the machine before and after.

Models: `--run RUN_DIR` uses a trained run; without it an untrained run of `--config` (default:
`demo`) with `--folds` folds is built from the generated studies (zero epochs: speed does not
depend on the weights, though an untrained localiser may miss axial slices a trained one finds).
Studies: `--studies` synthetic studies of `--size` (default `full`: 256-640 px, like real studies)
are generated into a temporary folder, or `--data DATA_ROOT` (an RSNA-layout folder with
train_images/) is used.

    .venv/bin/python benchmarks/bench_predict.py [--studies 8] [--size full] [--run RUN_DIR]
        [--config demo --folds 2] [--data DATA_ROOT] [--workers 2] [--threads 2] [--repeats 3]
        [--engines torch,onnx] [--device cpu] [--profile] [--cam]

Each method runs `--repeats` times, taking turns in a rotating order, and the median round (by
wall time) is printed. `--profile` then prints where the time of one more plain-loop round of
each engine goes (cProfile, the 25 most expensive functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from spinegrade.config import load_config
from spinegrade.cv.export import export_run
from spinegrade.cv.folder import FOLD_JSON, PRIOR_CSV, RunFolder
from spinegrade.cv.train import prior_table
from spinegrade.data.synthetic import generate
from spinegrade.data.tables import load_tables
from spinegrade.grade.train import train_grader
from spinegrade.inference import predict
from spinegrade.inference.run import STAGES, PredictResult
from spinegrade.io import write_json
from spinegrade.localize.train import train_localizer
from spinegrade.training.device import describe, resolve_device


def untrained_run(data: Path, run_dir: Path, config: str | None, folds: int) -> Path:
    """A run folder with `folds` complete, untrained folds of `config` (the contract's layout)."""
    cfg = load_config(
        config,
        ["localize.optim.epochs=0", "grade.optim.epochs=0", "data.num_workers=0", "device=cpu"],
    )
    tables = load_tables(data)
    ids = sorted(int(s) for s in tables.labels.study_id)
    run = RunFolder(run_dir)
    table = pd.DataFrame({"study_id": ids, "fold": [i % folds for i in range(len(ids))]})
    run.start(cfg, table, data, list(range(folds)), 1)
    for k in range(folds):
        train_localizer(
            data, ids, run.localizer_dir(k), cfg, cache_dir=run_dir / "cache", progress=False
        )
        train_grader(
            data,
            ids,
            tables.coordinates,
            tables.labels,
            run.grader_model(k).parent,
            cfg,
            cache_dir=run_dir / "cache",
            progress=False,
        )
        prior_table(tables.labels).to_csv(run.fold_dir(k) / PRIOR_CSV, index=False)
        write_json(run.fold_dir(k) / FOLD_JSON, {"fold": k, "untrained": True})
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--size", default="full", choices=["small", "full"])
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder")
    parser.add_argument("--config", default="demo", help="config of the untrained run")
    parser.add_argument("--folds", type=int, default=2, help="folds of the untrained run")
    parser.add_argument("--data", type=Path, default=None, help="an RSNA-layout folder")
    parser.add_argument("--workers", type=int, default=2, help="processes of the parallel path")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the plain loop")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (the models' device)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median is printed")
    parser.add_argument("--engines", default="torch,onnx", help="engines, comma-separated")
    parser.add_argument("--profile", action="store_true", help="cProfile one plain round each")
    parser.add_argument("--cam", action="store_true", help="with Grad-CAM maps (predict --cam)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    load_before = os.getloadavg()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            t0 = time.perf_counter()
            data = tmp / "data"
            generate(data, args.studies, seed=11, size=args.size, workers=2, progress=False)
            console.print(
                f"generated {args.studies} {args.size} studies in {time.perf_counter() - t0:.0f} s"
            )
        run = args.run or untrained_run(data, tmp / "run", args.config, args.folds)
        onnx_dir = RunFolder(run).onnx_dir()
        if "onnx" in engines and not onnx_dir.is_dir():
            t0 = time.perf_counter()
            onnx_dir = tmp / "onnx"
            export_run(run, onnx_dir)
            console.print(f"exported the run to ONNX in {time.perf_counter() - t0:.1f} s")
        methods = [
            (f"{engine}, {'plain loop' if w == 0 else f'{w} workers'}", engine, w)
            for engine in engines
            for w in (0, args.workers)
        ]

        def once(engine: str, workers: int, name: str) -> PredictResult:
            return predict(
                run,
                data / "train_images",
                tmp / f"out_{name}",
                workers=workers,
                progress=False,
                device=args.device,
                engine=engine,
                onnx_dir=onnx_dir if engine == "onnx" else None,
                cam=args.cam,
            )

        rounds: dict[str, list[PredictResult]] = {name: [] for name, _, _ in methods}
        for r in range(args.repeats):  # rotate the order: no method always pays the first round
            for name, engine, workers in methods[r % len(methods) :] + methods[: r % len(methods)]:
                rounds[name].append(once(engine, workers, name.replace(", ", "_")))
        results = {
            name: sorted(rs, key=lambda x: x.wall_s)[len(rs) // 2] for name, rs in rounds.items()
        }
        if args.profile:
            for engine in engines:
                profile = cProfile.Profile()
                profile.enable()
                once(engine, 0, f"profile_{engine}")
                profile.disable()
                console.print(f"[bold]profile, {engine} engine, plain loop[/]")
                pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    print_table(console, results, rounds, args, run)
    after = os.getloadavg()
    console.print(
        f"load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in after)}"
    )


def print_table(
    console: Console,
    results: dict[str, PredictResult],
    rounds: dict[str, list[PredictResult]],
    args: argparse.Namespace,
    run: Path,
) -> None:
    """The stage table of the median rounds, then each method's speed-up over the plain loop."""
    n = len(next(iter(results.values())).study_ids)
    model = args.run or f"untrained {args.config} config, {args.folds} fold(s)"
    table = Table(
        "s / study (median round)",
        *results,
        title=f"predict: {n} {args.size} studies, {len(os.sched_getaffinity(0))} cores, "
        f"models on {describe(resolve_device(args.device), args.threads)} in the plain loop, "
        f"model: {model}{', Grad-CAM maps' if args.cam else ''}",
    )
    for stage in STAGES:
        table.add_row(
            f"{stage}: wall / CPU",
            *(
                f"{r.timing.wall.get(stage, 0) / n:.3f} / {r.timing.cpu.get(stage, 0) / n:.3f}"
                for r in results.values()
            ),
        )
    table.add_row(
        "[bold]wall s / study[/]", *(f"[bold]{r.wall_s / n:.3f}[/]" for r in results.values())
    )
    table.add_row(
        "wall s / study, every round",
        *(" ".join(f"{x.wall_s / n:.2f}" for x in rs) for rs in rounds.values()),
    )
    table.add_row("studies / s", *(f"{r.studies_per_s:.2f}" for r in results.values()))
    table.add_row("model loading (s)", *(f"{r.load_s:.2f}" for r in results.values()))
    table.add_row("first study at (s)", *(f"{r.first_study_s:.2f}" for r in results.values()))
    console.print(table)
    base = next(iter(results.values()))
    for name, r in results.items():
        console.print(f"{name}: {base.wall_s / r.wall_s:.2f}x the first column")


if __name__ == "__main__":
    main()
