"""Out-of-fold score of the whole pipeline on a synthetic set, next to the oracle and the prior.

Generates (or reuses) a synthetic RSNA-format set (`spinegrade synth`, small size), runs
`spinegrade train` with k-fold cross-validation (both stages per fold, held-out studies graded from
PREDICTED points), and prints, on exactly the same studies: the model's OOF challenge score and its
four terms, the oracle (the set's `oracle.csv`), the constant prior fitted out of
fold and in sample, the model/oracle ratio (project target: within 1.3x of the oracle and below
0.5), the localisation figures, and the wall time with the number of CPU threads.

    .venv/bin/python benchmarks/bench_synthetic_cv.py --studies 300 --config demo --out /tmp/cv300

Long (tens of minutes on 2 cores): run it in the background. Re-running with the same `--out`
reuses the set and resumes the run (a finished run only re-evaluates; its wall time is then the
sum of the recorded fold timings).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from spinegrade.config import load_config
from spinegrade.constants import SCORE_TERMS
from spinegrade.data.synthetic import generate
from spinegrade.training.evaluate import metrics_table
from spinegrade.training.run import completed_folds, fold_dir, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", default="demo")
    parser.add_argument("--out", type=Path, default=Path("/tmp/spinegrade_bench_cv"))
    parser.add_argument("--workers", type=int, default=2, help="synthetic generation workers")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="use this existing synthetic set instead of generating <out>/data",
    )
    parser.add_argument(
        "--folds", default=None, help="train only these folds, e.g. 0 (default: all)"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args()
    console = Console()

    data = args.data or args.out / "data"
    tick = time.perf_counter()
    if not (data / "oracle.csv").is_file():
        generate(data, args.studies, args.seed, size="small", workers=args.workers)
    synth_s = time.perf_counter() - tick

    cfg = load_config(args.config, args.overrides)
    tick = time.perf_counter()
    folds = None if args.folds is None else [int(f) for f in args.folds.split(",")]
    summary = train(data, args.out / "run", cfg, folds=folds)
    wall = time.perf_counter() - tick
    metrics = summary.metrics
    fold_s = {
        k: sum(
            json.loads((fold_dir(args.out / "run", k) / "fold.json").read_text())[
                "timings"
            ].values()
        )
        for k in completed_folds(args.out / "run")
    }

    console.print(metrics_table(metrics))
    table = Table(
        "what",
        "value",
        title=f"{metrics['studies']} OOF studies of {data}, config {cfg.name} "
        f"{' '.join(args.overrides)}, folds {metrics['folds']} of "
        f"{cfg.data.folds}",
    )
    model = metrics["model"]["score"]["score"]
    oracle = metrics["oracle"]["score"] if metrics["oracle"] else float("nan")
    rows = [
        ("model OOF score", f"{model:.4f}"),
        ("oracle (oracle.csv of the set)", f"{oracle:.4f}"),
        ("constant prior, out of fold", f"{metrics['prior']['score']:.4f}"),
        ("constant prior, in sample", f"{metrics['prior_in_sample']['score']:.4f}"),
        ("model / oracle (target <= 1.3)", f"{model / oracle:.3f}"),
        ("target met (<= 1.3x oracle and < 0.5)", str(model <= 1.3 * oracle and model < 0.5)),
        *((f"model {t}", f"{metrics['model']['score']['terms'][t]:.4f}") for t in SCORE_TERMS),
        (
            "targets given the prior (not graded)",
            "{count} of {of}".format(**{"count": 0, "of": 0, **metrics["targets_not_graded"]}),
        ),
        ("synthetic generation (s)", f"{synth_s:.0f}" + (" (reused)" if synth_s < 5 else "")),
        ("train + evaluate wall time, this call (s)", f"{wall:.0f}"),
        ("sum of recorded fold timings (s)", f"{sum(fold_s.values()):.0f}"),
        *((f"fold {k} (s)", f"{v:.0f}") for k, v in fold_s.items()),
        ("torch threads / CPU cores", f"{torch.get_num_threads()} / {os.cpu_count()}"),
    ]
    loc = json.loads((args.out / "run" / "localization.json").read_text())
    for who in ("model", "baseline"):
        if loc.get(who):
            o = loc[who]["overall"]
            rows.append(
                (
                    f"localisation {who}: p90 mm / level right / slice<=1",
                    (
                        f"{o['inplane_mm_p90']:.2f} / {o['level_right']:.1%} / "
                        f"{o['slice_within_1']:.1%}"
                    ),
                )
            )
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
