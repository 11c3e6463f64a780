"""Benchmark: synthetic study generation (time, disk, reference scores) and the rendering shortcut.

1. Generates `--studies` studies of `--size` with `--workers` processes into a temporary folder and
   prints the label source, generation time, disk size and the scores of the per-target Bayes
   oracle (`oracle.csv`), the joint one and the leave-own-row-out oracle (real rows only) and the
   constant prior.
2. Times, in the same run, the rendering of `--plain` studies both ways: on the coarser acquisition
   grid then interpolated (what `generate` does) and the plain way, every stored pixel painted
   (`acq_mm=0`). The two take turns on the same phantoms and plans.

    .venv/bin/python benchmarks/bench_synth.py [--studies 200] [--size full] [--workers 2]
        [--seed 0] [--plain 2] [--keep DIR]
    .venv/bin/python benchmarks/bench_synth.py --calibrate [--studies 200]  # scores per noise s
    .venv/bin/python benchmarks/bench_synth.py --scores-only  # generate's scores, no images
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from spinegrade.data.synthetic import generate
from spinegrade.data.synthetic.generate import label_scores
from spinegrade.data.synthetic.labels import READER_NOISE, ReaderModel
from spinegrade.data.synthetic.phantom import make_phantom
from spinegrade.data.synthetic.render import ACQ_MM, render_series
from spinegrade.data.synthetic.scanner import plan_series
from spinegrade.data.synthetic.source import label_source

SCORES = ("oracle_joint_score", "oracle_score", "oracle_loo_score", "prior_score")


def _cell(value: float | None) -> str:
    return "n/a (no real rows)" if value is None else f"{value:.4f}"


def time_rendering(n: int, size: str, seed: int) -> tuple[float, float, int]:
    """Seconds per study rendering on the acquisition grid and the plain way; images per study."""
    source = label_source()
    model = ReaderModel.from_priors(source.priors())
    fast = plain = 0.0
    images = 0
    for i in range(n):
        rng = np.random.default_rng([seed, 999, i])
        phantom = make_phantom(rng, model.sample_z(source.draw(rng)[1], rng))
        for plan in plan_series(phantom, rng, size, (1, 1, 1)):
            images += plan.n_slices
            t = time.perf_counter()
            render_series(phantom, plan, np.random.default_rng(0), acq_mm=ACQ_MM)
            fast += time.perf_counter() - t
            t = time.perf_counter()
            render_series(phantom, plan, np.random.default_rng(0), acq_mm=0.0)
            plain += time.perf_counter() - t
    return fast / n, plain / n, images // max(n, 1)


def calibration_table(n_studies: int, seed: int, repeats: int = 3) -> Table:
    """Mean (sd) scores of the reference predictions per reader noise s, label level (no images):
    the scores `generate` would report for seeds `seed`, `seed + 1`, ..."""
    source = label_source()
    table = Table(
        "reader noise s",
        "oracle joint",
        "oracle per target",
        "joint, own row out",
        "constant prior",
        title=f"label-level scores, {repeats} sets of {n_studies} studies (s now {READER_NOISE}), "
        f"labels: {source.name}",
    )
    for noise in (0.42, 0.5, 0.6, 0.8, 0.88, 1.0):
        runs = [label_scores(n_studies, seed + r, source, noise) for r in range(repeats)]
        cells = [
            "n/a"
            if runs[0][k] is None
            else f"{np.mean([r[k] for r in runs]):.3f} ({np.std([r[k] for r in runs]):.3f})"
            for k in SCORES
        ]
        table.add_row(f"{noise:.2f}", *cells)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--size", default="full", choices=["small", "full"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--plain", type=int, default=2, help="studies for the rendering comparison (0: skip)"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="write the studies here and keep them"
    )
    parser.add_argument(
        "--scores-only",
        action="store_true",
        help="only the scores generate would report (from the label draws, no images)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="only print the label-level scores per reader noise s (3 sets of --studies)",
    )
    args = parser.parse_args()
    console = Console()
    if args.calibrate:
        console.print(calibration_table(args.studies, args.seed))
        return
    if args.scores_only:
        source = label_source()
        scores = label_scores(args.studies, args.seed, source)
        table = Table(
            "what",
            "value",
            title=f"scores of {args.studies} studies, seed {args.seed}, labels: {source.name}",
        )
        for name in SCORES:
            table.add_row(name, _cell(scores[name]))
        console.print(table)
        return

    tmp = None
    if args.keep is None:
        tmp = tempfile.mkdtemp(prefix="bench_synth_")
        out = Path(tmp) / "synth"
    else:
        out = args.keep
    try:
        s = generate(out, args.studies, args.seed, size=args.size, workers=args.workers)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    table = Table(
        "what",
        "value",
        title=f"generate: {args.studies} {args.size} studies, {args.workers} workers, "
        f"seed {args.seed}",
    )
    rows = [
        ("labels", s.label_source),
        ("seconds", f"{s.seconds:.1f}"),
        ("seconds / study", f"{s.seconds / s.n_studies:.2f}"),
        ("series / images", f"{s.n_series} / {s.n_images}"),
        ("disk MB", f"{s.bytes_on_disk / 1e6:.1f}"),
        ("MB / study", f"{s.bytes_on_disk / 1e6 / s.n_studies:.2f}"),
        ("reader noise s", f"{s.reader_noise:.3f}"),
        ("oracle, per target (oracle.csv)", f"{s.oracle_score:.4f}"),
        ("oracle, joint over real rows (oracle_joint.csv)", _cell(s.oracle_joint_score)),
        ("oracle, joint, own row left out", _cell(s.oracle_loo_score)),
        ("constant prior", f"{s.prior_score:.4f}"),
    ]
    rows += [(f"  oracle term {k}", f"{v:.4f}") for k, v in s.terms.items()]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)

    if args.plain > 0:
        fast, plain, images = time_rendering(args.plain, args.size, args.seed)
        cmp = Table(
            "rendering (1 process, no writing)",
            "s / study",
            title=f"{args.plain} {args.size} studies, ~{images} images each",
        )
        cmp.add_row(f"acquisition grid {ACQ_MM} mm + bilinear (generate)", f"{fast:.2f}")
        cmp.add_row("plain: every stored pixel painted", f"{plain:.2f}")
        cmp.add_row("speed-up", f"{plain / fast:.2f}x")
        console.print(cmp)


if __name__ == "__main__":
    main()
