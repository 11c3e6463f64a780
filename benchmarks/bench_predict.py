"""Benchmark: `spinegrade predict` with worker processes vs the plain single-process loop, in one
run.

Both run exactly the same steps per study (read the DICOM, localise, grade, write predictions.json,
overlays and report.html; then submission.csv and index.html): the plain loop does them one after
the other in one process (`workers=0`), the pipeline reads and writes in `--workers` processes
while the model runs in the main process. Printed: seconds per study of each stage, wall and CPU
(summed over studies; in the pipeline the stages overlap; CPU time counts every thread and is not
inflated when other programs share the cores), wall seconds per study and studies per second.

Models: `--run RUN_DIR` uses a trained run; without it an untrained run of `--config` (default: the
default config, i.e. the "default model") with `--folds` folds is built from the generated studies
(zero epochs: speed does not depend on the weights). Studies: `--studies` synthetic studies of
`--size` (default `full`: 256-640 px, like real studies) are generated into a temporary folder, or
`--data DATA_ROOT` (an RSNA-layout folder with train_images/) is used.

    .venv/bin/python benchmarks/bench_predict.py [--studies 6] [--size full] [--folds 1] [--workers
    2]
        [--config NAME] [--run RUN_DIR] [--data DATA_ROOT] [--threads 2] [--repeats 2] [--device
        cpu]

Each method runs `--repeats` times, taking turns, and its fastest round is printed: the first
round pays one-off costs (page cache, oneDNN kernels for new input shapes) whichever method it is.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from spinegrade.config import load_config, save_config
from spinegrade.data.synthetic import generate
from spinegrade.data.tables import load_tables
from spinegrade.grade.train import train_grader
from spinegrade.inference import predict
from spinegrade.inference.run import STAGES, PredictResult
from spinegrade.localize.train import train_localizer
from spinegrade.training.device import describe, resolve_device
from spinegrade.training.run import prior_table


def untrained_run(data: Path, run: Path, config: str | None, folds: int) -> Path:
    """A run folder with `folds` identical untrained folds of `config` (the contract's layout)."""
    cfg = load_config(
        config,
        ["localize.optim.epochs=0", "grade.optim.epochs=0", "data.num_workers=0", "device=cpu"],
    )
    tables = load_tables(data)
    ids = sorted(int(s) for s in tables.labels.study_id)
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    prior_table(tables.labels).to_csv(run / "prior.csv", index=False)
    for k in range(folds):
        train_localizer(
            data, ids, run / f"fold_{k}" / "localizer", cfg, cache_dir=run / "cache", progress=False
        )
        train_grader(
            data,
            ids,
            tables.coordinates,
            tables.labels,
            run / f"fold_{k}" / "grader",
            cfg,
            cache=run / "cache",
            progress=False,
        )
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--size", default="full", choices=["small", "full"])
    parser.add_argument(
        "--folds", type=int, default=1, help="folds of the untrained run (ignored with --run)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--config", default=None, help="config of the untrained run (default: the default config)"
    )
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder instead")
    parser.add_argument(
        "--data", type=Path, default=None, help="an RSNA-layout folder instead of generating"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (the models' device)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="rounds; the methods take turns (the first round warms caches) and the best is kept",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            t0 = time.perf_counter()
            data = tmp / "data"
            generate(
                data, args.studies, seed=11, size=args.size, workers=args.workers, progress=False
            )
            console.print(
                f"generated {args.studies} {args.size} studies in {time.perf_counter() - t0:.0f} s"
            )
        run = args.run or untrained_run(data, tmp / "run", args.config, args.folds)
        methods = [
            ("plain loop (1 process)", 0),
            (f"pipeline ({args.workers} workers)", args.workers),
        ]
        results: dict[str, PredictResult] = {}
        for r in range(args.repeats):  # the methods take turns; each keeps its fastest round
            for name, workers in methods[:: 1 if r % 2 == 0 else -1]:
                res = predict(
                    run,
                    data / "train_images",
                    tmp / f"out_{workers}",
                    workers=workers,
                    progress=False,
                    device=args.device,
                )
                if name not in results or res.wall_s < results[name].wall_s:
                    results[name] = res
        results = {name: results[name] for name, _ in methods}
    n = len(next(iter(results.values())).study_ids)
    model = args.run or f"untrained {args.config or 'default'} config, {args.folds} fold(s)"
    table = Table(
        "stage (s / study)",
        *results,
        title=f"predict: {n} {args.size} studies, "
        f"{len(os.sched_getaffinity(0))} cores, models on "
        f"{describe(resolve_device(args.device), args.threads)}, "
        f"model: {model}",
    )
    for stage in STAGES:
        table.add_row(
            f"{stage}: wall / CPU",
            *(
                f"{r.timing.wall[stage] / n:.2f} / {r.timing.cpu[stage] / n:.2f}"
                for r in results.values()
            ),
        )
    total_cpu = {k: sum(r.timing.cpu.values()) / n for k, r in results.items()}
    table.add_row("all stages: CPU", *(f"{v:.2f}" for v in total_cpu.values()))
    table.add_row(
        "[bold]wall s / study[/]", *(f"[bold]{r.wall_s / n:.2f}[/]" for r in results.values())
    )
    table.add_row("studies / s", *(f"{r.studies_per_s:.3f}" for r in results.values()))
    table.add_row("of which model loading (s)", *(f"{r.load_s:.1f}" for r in results.values()))
    table.add_row(
        "first study read after (s)", *(f"{r.first_study_s:.1f}" for r in results.values())
    )
    console.print(table)
    base, fast = results.values()
    console.print(f"speed-up of the pipeline: {base.wall_s / fast.wall_s:.2f}x")


if __name__ == "__main__":
    main()
