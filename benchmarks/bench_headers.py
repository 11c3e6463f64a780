"""DICOM header reading speed: the inspection's parallel header reader against reading whole files.

Writes `--series` series of `--slices` realistic 512x512 uint16 MR files (uncompressed, ~0.5 MB
each) into a temporary RSNA-layout folder, then times, in the same run and on the same files:

- `read_headers` (what `spinegrade inspect` uses): headers only (`stop_before_pixels`), in
  `--workers` processes, and in one process;
- the plain alternative: `pydicom.dcmread(path).pixel_array` for every file, in one process and in
  `--workers` processes (so that parallelism alone is not what is compared).

Cold (default): before every timed run the files are flushed and dropped from the page cache
(`posix_fadvise(DONTNEED)` on these files only), as for a freshly downloaded dataset. `--warm`
keeps them cached (best case for the plain alternative: no disk reads at all). Each method runs
`--repeat` times; the best time is reported.

    .venv/bin/python benchmarks/bench_headers.py --series 12 --slices 20 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless
from rich.console import Console
from rich.table import Table

from spinegrade.dicom import make_uid, write_series
from spinegrade.report.inspect import read_headers

SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "jpegls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}


def make_files(
    images_dir: Path, n_series: int, n_slices: int, size: int = 512, syntax: str = "explicit"
) -> list[Path]:
    """`n_series` sagittal series of `n_slices` (size x size) uint16 files; returns the files.

    Pixels are a smooth 12-bit image plus noise, so that compressed syntaxes compress like MR.
    """
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 1500 + 1000 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    files: list[Path] = []
    for s in range(n_series):
        noise = rng.normal(0, 40, (n_slices, size, size))
        pixels = np.clip(base + noise, 0, 4095).astype(np.uint16)
        files += write_series(
            images_dir / "1000" / str(2000 + s),
            pixels,
            origin=(-40.0, -120.0, 120.0),
            row_dir=(0, 1, 0),
            col_dir=(0, 0, -1),
            pixel_spacing=(0.5, 0.5),
            slice_thickness=4.0,
            series_description="Sagittal T2/STIR",
            study_uid=make_uid("bench-study"),
            series_uid=make_uid("bench-series", s),
            series_number=s + 1,
            manufacturer="SIEMENS",
            transfer_syntax=SYNTAXES[syntax],
        )
    return files


def drop_from_page_cache(files: list[Path]) -> None:
    """Flush `files` and ask the kernel to drop their cached pages (only these files)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_full(path: Path) -> int:
    """The plain alternative for one file: the whole dataset and its decoded pixels."""
    return int(pydicom.dcmread(path).pixel_array[0, 0])


def best_time(
    fn: Callable[[], int], repeat: int, files: list[Path], cold: bool
) -> tuple[float, int]:
    """Best wall time of `repeat` calls of `fn`, and what it returned (files handled)."""
    best, n = float("inf"), 0
    for _ in range(repeat):
        if cold:
            drop_from_page_cache(files)
        start = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - start)
    return best, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=12)
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warm", action="store_true", help="keep the files in the page cache")
    ap.add_argument(
        "--syntax",
        choices=sorted(SYNTAXES),
        default="explicit",
        help="transfer syntax of the files (explicit = uncompressed)",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_headers_") as tmp:
        images = Path(tmp) / "train_images"
        files = make_files(images, args.series, args.slices, syntax=args.syntax)
        mb = sum(f.stat().st_size for f in files) / 1e6

        def parallel() -> int:
            slices, failures = read_headers(images, workers=args.workers, progress=False)
            assert failures.empty
            return len(slices)

        def serial() -> int:
            return len(read_headers(images, workers=1, progress=False)[0])

        def full_serial() -> int:
            return len([read_full(f) for f in files])

        def full_parallel() -> int:
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                return len(list(pool.map(read_full, files, chunksize=8)))

        w = args.workers
        rows = [
            (f"headers only, {w} procs (inspect)", parallel),
            ("headers only, 1 proc", serial),
            (f"dcmread+pixel_array, {w} procs", full_parallel),
            ("dcmread+pixel_array, 1 proc (plain)", full_serial),
        ]
        results = [(name, *best_time(fn, args.repeat, files, not args.warm)) for name, fn in rows]

    plain = results[-1][1]
    table = Table(
        "method",
        "files",
        "seconds",
        "files/s",
        "vs plain",
        title=f"{len(files)} files of 512x512 uint16, {args.syntax} ({mb:.0f} MB), "
        f"{'warm' if args.warm else 'cold'} page cache, best of {args.repeat}, "
        f"{os.cpu_count()} CPUs",
    )
    for name, seconds, n in results:
        table.add_row(
            name, str(n), f"{seconds:.3f}", f"{n / seconds:,.0f}", f"{plain / seconds:.1f}x"
        )
    Console().print(table)


if __name__ == "__main__":
    main()
