"""Grader training throughput (CPU by default, `--device cuda`): where do the crops come from, and
what does it cost?

Trains the grader for one epoch (the shared loop, same model, same augmentation, same studies) with
three data sources, in one run, and prints samples (studies) per second and the loop's split of the
time between waiting for data and computing (`FitResult.timings`):

- `patches (cache)`: what `train_grader` does: studies read once from the npz cache, only each
  target's sub-volume kept in memory, crops cut on the fly;
- `volumes (cache)`: the same, keeping the whole cached volumes (no patches);
- `DICOM per sample`: the plain alternative: every item reads its study's DICOM files again.

Set-up time (caching, reading, cutting patches) is printed separately. Usage:

    python benchmarks/bench_train_throughput.py [--data RSNA_DIR] [--studies 24] [--config demo]
        [--set grade.crop_px=24 ...] [--workers 0] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import Dataset

from spinegrade.config import load_config
from spinegrade.data.cache import cache_studies, load_cached
from spinegrade.data.tables import load_tables
from spinegrade.dicom import load_study
from spinegrade.grade.dataset import GradeDataset, label_vector, locate_targets
from spinegrade.grade.loss import grade_loss
from spinegrade.grade.train import augment_params, build_model, crop_params, forward
from spinegrade.training.device import describe, resolve_device
from spinegrade.training.loop import fit


class DicomPerSample(Dataset):
    """The plain alternative: each item reads its study from DICOM, then crops like
    `GradeDataset`."""

    def __init__(
        self, images: Path, ids: list[int], coords: pd.DataFrame, labels: pd.DataFrame, cfg
    ) -> None:  # type: ignore[no-untyped-def]
        self.images, self.ids, self.cfg = images, ids, cfg
        self.points = {s: coords[coords["study_id"] == s] for s in ids}
        self.labels = {s: label_vector(labels, s) for s in ids}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sid = self.ids[i]
        located = locate_targets(load_study(self.images / str(sid)), self.points[sid])
        one = GradeDataset(
            [located], [self.labels[sid]], crop_params(self.cfg), augment_params(self.cfg)
        )
        return one[0]


def run(
    name: str, make, cfg, out: Path, workers: int, device: torch.device
) -> dict[str, float | str]:  # type: ignore[no-untyped-def]
    """Build a data set with `make()` (timed), train one epoch on it, return a table row."""
    tick = time.perf_counter()
    data = make()
    setup = time.perf_counter() - tick
    torch.manual_seed(0)
    model = build_model(cfg.grade)
    result = fit(
        model,
        data,
        None,
        lambda o, b: grade_loss(o, b["labels"]),
        cfg.grade.optim,
        out / name.split()[0],
        device=device,
        num_workers=workers,
        forward=forward,
        desc=name,
        seed=0,
    )
    t = result.timings
    return {
        "source": name,
        "setup_s": setup,
        "studies": t["samples"],
        "data_s": t["data_s"],
        "compute_s": t["compute_s"],
        "samples_per_s": t["samples_per_s"],
        "data_share": t["data_s"] / max(t["data_s"] + t["compute_s"], 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help="RSNA-layout folder (default: generate synthetic studies)"
    )
    parser.add_argument("--studies", type=int, default=24, help="studies to train on")
    parser.add_argument("--config", default="demo", help="config whose grade section is used")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override key=value"
    )
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = load_config(args.config, [*args.overrides, "grade.optim.epochs=1"])
    console = Console(width=140)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = args.data
        if root is None:
            from spinegrade.data.synthetic import generate

            root = tmp / "synth"
            generate(root, args.studies, seed=1, size="small")
        tables = load_tables(root)
        coords, labels = tables.coordinates, tables.labels
        ids = [int(s) for s in labels["study_id"]][: args.studies]
        images = root / "train_images"

        tick = time.perf_counter()
        paths = cache_studies(images, ids, tmp / "cache", tables.series, progress=False).paths
        cache_s = time.perf_counter() - tick

        def cached(patches: bool) -> GradeDataset:
            studies = ((s, load_cached(paths[s])) for s in ids if s in paths)
            return GradeDataset.from_studies(
                studies,
                coords,
                labels,
                crop_params(cfg.grade),
                augment_params(cfg.grade),
                patches=patches,
            )

        if device.type == "cuda":  # untimed: CUDA and cuDNN start-up would land on the first row
            run(
                "warm-up (not shown)", lambda: cached(True), cfg, tmp / "warm", args.workers, device
            )
        rows = [
            run("patches (cache)", lambda: cached(True), cfg, tmp / "runs", args.workers, device),
            run("volumes (cache)", lambda: cached(False), cfg, tmp / "runs", args.workers, device),
            run(
                "DICOM per sample",
                lambda: DicomPerSample(images, ids, coords, labels, cfg.grade),
                cfg,
                tmp / "runs",
                args.workers,
                device,
            ),
        ]
    g = cfg.grade
    table = Table(
        title=f"grader training, 1 epoch on {len(ids)} studies, {describe(device, args.threads)}, "
        f"{args.workers} loader workers: {g.backbone}, {g.slices}x{g.crop_px}px crops, "
        f"batch {g.optim.batch_size}"
    )
    for col in ("source", "setup s", "studies/s", "crops/s", "data s", "compute s", "data share"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for r in rows:
        table.add_row(
            str(r["source"]),
            f"{r['setup_s']:.1f}",
            f"{r['samples_per_s']:.2f}",
            f"{25 * float(r['samples_per_s']):.0f}",
            f"{r['data_s']:.1f}",
            f"{r['compute_s']:.1f}",
            f"{100 * float(r['data_share']):.0f}%",
        )
    console.print(table)
    console.print(
        f"building the study cache once took {cache_s:.1f} s (not in the set-up times above); "
        "crops/s counts 25 per study (missing targets are not cropped: an upper bound)."
    )


if __name__ == "__main__":
    main()
