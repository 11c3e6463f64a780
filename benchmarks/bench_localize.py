"""Localisation time of one `full`-size synthetic study (CPU by default, `--device cuda`), model
loaded.

Compares, in one run, the Localizer as shipped (every slice of a stack in one batch) with the plain
alternative (the same network run slice by slice, batch size 1), per series type and end to end.
Network weights do not change the time, so an untrained localiser of the chosen config is used
unless `--model` names a trained one.

    .venv/bin/python benchmarks/bench_localize.py [--config demo] [--threads 2] [--repeats 3]
    [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from spinegrade.config import load_config
from spinegrade.constants import LEVELS, SAGITTAL_T1, SAGITTAL_T2
from spinegrade.data.synthetic.generate import generate
from spinegrade.data.tables import load_tables
from spinegrade.dicom import load_study
from spinegrade.localize.dataset import AXIAL_CHANNELS, SAGITTAL_CHANNELS, PreparedStacks
from spinegrade.localize.predict import Localizer
from spinegrade.localize.train import build_net
from spinegrade.training.device import describe, resolve_device


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Best of `repeats` wall-clock seconds of `fn()` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument(
        "--model", type=Path, default=None, help="trained localiser folder (optional)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "synth", 1, args.seed, size="full", progress=False)
        root = Path(tmp) / "synth"
        sid = int(load_tables(root).series.study_id.iloc[0])
        start = time.perf_counter()
        study = load_study(root / "train_images" / str(sid), load_tables(root).series)
        read_s = time.perf_counter() - start
    device = resolve_device(args.device)
    if args.model is not None:
        loc = Localizer.load(args.model, device)
    else:
        lc = cfg.localize
        nets = [
            build_net(lc, channels).to(device).eval()
            for channels in (SAGITTAL_CHANNELS, AXIAL_CHANNELS)
        ]
        loc = Localizer(nets[0], nets[1], lc, device)
    fresh = PreparedStacks  # a new memo per call: every timing includes the stack preparation
    t2 = loc.stack_heat(study, SAGITTAL_T2, fresh())
    canal = {
        lv: (t2.point(int(t2.peak[:, i].argmax()), i, "bench") if t2 else "none")
        for i, lv in enumerate(LEVELS)
    }
    shapes = {s.series_type: max(s.stacks, key=lambda v: v.shape[0]).shape for s in study.series}
    rows = []
    for name, fn in (
        (
            f"{SAGITTAL_T2} {shapes.get(SAGITTAL_T2)}",
            lambda: loc.stack_heat(study, SAGITTAL_T2, fresh()),
        ),
        (
            f"{SAGITTAL_T1} {shapes.get(SAGITTAL_T1)}",
            lambda: loc.stack_heat(study, SAGITTAL_T1, fresh()),
        ),
        ("Axial T2 (5 levels)", lambda: loc._axial(study, canal, fresh())),
        ("whole study (locate)", lambda: loc.locate(study)),
    ):
        loc.batch_size = 64
        batched = timed(fn, args.repeats)
        loc.batch_size = 1
        plain = timed(fn, args.repeats)
        rows.append((name, batched, plain))
    table = Table(
        "part",
        "batched (s)",
        "slice by slice (s)",
        "speed-up",
        title=f"localisation of one full-size study on {describe(device, args.threads)}, "
        f"{cfg.localize.backbone} at {cfg.localize.image_size} px (DICOM read: {read_s:.2f} s)",
    )
    for name, batched, plain in rows:
        table.add_row(name, f"{batched:.3f}", f"{plain:.3f}", f"{plain / batched:.2f}x")
    Console().print(table)
    total = rows[-1][1]
    print(
        f"target < 1 s per study after loading: {'met' if total < 1 else 'NOT met'} ({total:.3f} s)"
    )


if __name__ == "__main__":
    main()
