"""Benchmark: what `predict --dicom-out` costs per study, against `predict` without it, in one run.

Both predict the same studies in one process (`workers=0`); `--dicom-out` adds, per study, the
SR (highdicom, 25 findings) and the three overlays as Secondary Capture images, built from the
PNGs that both write. Printed: seconds per study of the write stage and of the whole batch, and
the size of the DICOM files; then the SR and the Secondary Captures built alone, per study (the
first SR of a process also loads highdicom's tables of the standard: shown apart).

Models: an untrained run of `--config` (default `tiny`) built from the generated studies (zero
epochs: speed does not depend on the weights), or `--run RUN_DIR`. Studies: `--studies`
synthetic studies of `--size` (default `full`, like real studies).

    .venv/bin/python benchmarks/bench_dicom_out.py [--studies 3] [--size full] [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from bench_predict import untrained_run
from rich.console import Console
from rich.table import Table

from spinegrade.data.synthetic import generate
from spinegrade.inference import predict
from spinegrade.inference.dicom_out import build_overlay, build_sr, plan_dicom, run_provenance
from spinegrade.inference.discover import discover_studies, load_source
from spinegrade.inference.run import PredictResult


def build_times(out: Path, images: Path, run: Path) -> tuple[float, list[float], list[float]]:
    """(first SR, later SRs, Secondary Captures) build seconds, rebuilt from `out`'s records."""
    provenance = run_provenance(run, [0], tta=False)
    srs, scs = [], []
    for source in discover_studies(images).studies:
        folder = out / "studies" / str(source.study_id)
        record = json.loads((folder / "predictions.json").read_text())
        overlays = [p.stem for p in folder.glob("*.png")]
        job = plan_dicom(load_source(source), source, record, overlays, provenance)
        t0 = time.perf_counter()
        build_sr(record, job)
        t1 = time.perf_counter()
        for k, name in enumerate(job.overlays, start=1):
            build_overlay(folder / f"{name}.png", name, k, job)
        srs.append(t1 - t0)
        scs.append((time.perf_counter() - t1) / max(len(job.overlays), 1))
    return srs[0], srs[1:], scs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--size", default="full", choices=["small", "full"])
    parser.add_argument("--config", default="tiny", help="config of the untrained run")
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder instead")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="rounds, the two taking turns; the best of each is kept",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench_dicom_out_") as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        generate(data, args.studies, seed=11, size=args.size, progress=False)
        run = args.run or untrained_run(data, tmp / "run", args.config, 1)
        methods = {"predict": False, "predict --dicom-out": True}
        results: dict[str, PredictResult] = {}
        for r in range(args.repeats):
            for name, dicom_out in list(methods.items())[:: 1 if r % 2 == 0 else -1]:
                res = predict(
                    run,
                    data / "train_images",
                    tmp / name.replace(" ", "_"),
                    workers=0,
                    progress=False,
                    dicom_out=dicom_out,
                )
                if name not in results or res.wall_s < results[name].wall_s:
                    results[name] = res
        out = tmp / "predict_--dicom-out"
        sizes = [p.stat().st_size for p in out.glob("studies/*/dicom/*.dcm")]
        first_sr, srs, scs = build_times(out, data / "train_images", run)
    n = args.studies
    table = Table(
        "s / study",
        *methods,
        title=f"predict on {n} {args.size} synthetic studies, one "
        f"process, {len(os.sched_getaffinity(0))} cores, {args.threads} torch thread(s)",
    )
    table.add_row("write stage", *(f"{results[m].timing.wall['write'] / n:.2f}" for m in methods))
    table.add_row("[bold]wall[/]", *(f"[bold]{results[m].wall_s / n:.2f}[/]" for m in methods))
    console.print(table)
    extra = (results["predict --dicom-out"].wall_s - results["predict"].wall_s) / n
    console.print(
        f"--dicom-out adds {extra:.2f} s per study; DICOM files "
        f"{sum(sizes) / n / 1e6:.1f} MB per study. Built alone: first SR of the process "
        f"{first_sr:.2f} s, then "
        f"{sum(srs) / max(len(srs), 1):.2f} s per SR; {sum(scs) / len(scs):.3f} s per "
        "Secondary Capture"
    )


if __name__ == "__main__":
    main()
