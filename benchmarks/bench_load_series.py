"""Benchmark: reading series with `spinegrade.dicom` vs the plain pydicom loop, in one run.

Writes realistic series into a temporary folder (512x512 sagittal series of 15-20 slices, axial
series of 20-60 slices), then reads all of them with each method and prints slices/second (best of
`--repeats` rounds in which the methods take turns; files are read once before timing so every
method sees a warm page cache).

    .venv/bin/python benchmarks/bench_load_series.py [--sagittal 4] [--axial 3] [--repeats 5]
        [--syntax explicit|jpeg2000|jpegls|rle]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless
from rich.console import Console
from rich.table import Table

from spinegrade.dicom import load_many, load_series, make_uid, write_series

SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "jpeg2000": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "rle": RLELossless,
}


def plain_loop(series_dir: Path) -> np.ndarray:
    """The plain alternative: dcmread + pixel_array per file, sort by dot(IPP, n). (slices, rows,
    cols)."""
    dss = [pydicom.dcmread(f) for f in sorted(series_dir.glob("*.dcm"))]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    n = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), n)))
    return np.stack([ds.pixel_array for ds in dss])


def write_dataset(
    root: Path, n_sagittal: int, n_axial: int, syntax: str = ExplicitVRLittleEndian, seed: int = 0
) -> list[Path]:
    """Write the series (files in shuffled order, like real data) and return their folders."""
    rng = np.random.default_rng(seed)
    dirs = []
    for i in range(n_sagittal + n_axial):
        sagittal = i < n_sagittal
        slices = int(rng.integers(15, 21) if sagittal else rng.integers(20, 61))
        size = 512 if sagittal else int(rng.choice([384, 448, 512]))
        r, c = ((0, 1, 0), (0, 0, -1)) if sagittal else ((1, 0, 0), (0, 1, 0))
        # smooth image plus noise: compresses like MR, unlike pure noise
        yy, xx = np.mgrid[:size, :size]
        base = 800 + 600 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
        pixels = (
            (base + rng.normal(0, 40, size=(slices, size, size))).clip(0, 4095).astype(np.uint16)
        )
        order = rng.permutation(slices)
        n = np.cross(r, c)
        positions = np.array([-100.0, -100.0, 50.0]) + np.arange(slices)[:, None] * 3.5 * n
        folder = root / str(1000 + i)
        write_series(
            folder,
            pixels[order],
            origin=positions[0],
            row_dir=r,
            col_dir=c,
            pixel_spacing=(0.6, 0.6),
            slice_positions=positions[order],
            slice_thickness=3.5,
            instance_numbers=[int(k) + 1 for k in order],
            series_description="Sagittal T2/STIR" if sagittal else "Axial T2",
            study_uid=make_uid("bench"),
            series_uid=make_uid("bench", i),
            series_number=i,
            transfer_syntax=syntax,
        )
        dirs.append(folder)
    return dirs


def best_times(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each method; methods take turns in every round so load drift hits all
    alike."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagittal", type=int, default=4)
    parser.add_argument("--axial", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--syntax",
        choices=sorted(SYNTAXES),
        default="explicit",
        help="transfer syntax of the written files",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = write_dataset(Path(tmp), args.sagittal, args.axial, SYNTAXES[args.syntax])
        n_slices = sum(len(list(d.glob("*.dcm"))) for d in dirs)
        for d in dirs:  # warm the page cache and check both readers agree
            assert np.array_equal(plain_loop(d), load_series(d).pixels)
        methods: dict[str, Callable[[], object]] = {
            "plain loop (dcmread + pixel_array, sort by IPP)": lambda: [
                plain_loop(d) for d in dirs
            ],
            "load_series, workers=0": lambda: [load_series(d) for d in dirs],
            "load_series, workers=2 (pool over files)": lambda: [
                load_series(d, workers=2) for d in dirs
            ],
            "load_many, workers=2 (pool over series)": lambda: load_many(
                dirs, workers=2, progress=False
            ),
            "load_many, workers=4 (pool over series)": lambda: load_many(
                dirs, workers=4, progress=False
            ),
        }
        table = Table(
            title=f"{len(dirs)} series, {n_slices} slices, {args.syntax} "
            f"(best of {args.repeats}, {os.cpu_count()} CPUs)"
        )
        for col in ("method", "seconds", "slices/s", "vs plain"):
            table.add_column(col, justify="left" if col == "method" else "right")
        best = best_times(methods, args.repeats)
        base = next(iter(best.values()))
        for name, t in best.items():
            table.add_row(name, f"{t:.3f}", f"{n_slices / t:.0f}", f"{base / t:.2f}x")
        Console().print(table)


if __name__ == "__main__":
    main()
