"""Check: series typed without SeriesDescription (`series_from_stacks`), synthetic and real.

Generates synthetic studies (both sagittal contrasts, STIR in about a fifth of the T2/STIR series;
needs the real label table, see `spinegrade synth`) into a temporary folder, reads them, blanks
every series' description and types them again; the real RSNA studies of
`$SPINEGRADE_SHARED_DATA/rsna_dicom` (or `--real`) are checked the same way when present. Prints,
per source and true type, the midline fade's range and how many series were typed right, left
unknown or typed wrong.

    .venv/bin/python benchmarks/bench_series_typing.py [--studies 30] [--seed 11] [--size small]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from spinegrade.constants import AXIAL_T2
from spinegrade.data.synthetic import generate
from spinegrade.data.tables import read_series
from spinegrade.dicom import Study, load_study, series_from_stacks
from spinegrade.dicom.contrast import midline_fade


def undescribed(study: Study) -> list[tuple[int | None, str | None, str]]:
    """(series_id, type, note) of each series typed again with its description blanked."""
    loaded = [
        (s.series_id, [replace(v, meta=replace(v.meta, description="")) for v in s.stacks])
        for s in study.series
    ]
    return [(s.series_id, s.series_type, s.note) for s in series_from_stacks(loaded)]


Rows = dict[tuple[str, str], list[tuple[str | None, float | None]]]


def check(source: str, images: Path, table: pd.DataFrame, rows: Rows) -> None:
    """Add the results of every study folder under `images` to `rows[(source, true type)]`."""
    truth = {(int(a), int(b)): d for a, b, d in table.itertuples(index=False)}
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        study = load_study(folder)
        for s, (sid, typed, _) in zip(study.series, undescribed(study), strict=True):
            true = truth[(study.study_id, sid)]
            main = max(s.stacks, key=lambda v: v.shape[0])
            fade = midline_fade(main) if true != AXIAL_T2 else None
            rows[(source, true)].append((typed, fade))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--size", choices=("small", "full"), default="small")
    shared = Path(os.environ.get("SPINEGRADE_SHARED_DATA", "../shared/data")) / "rsna_dicom"
    parser.add_argument("--real", type=Path, default=shared, help="the real studies' folder")
    args = parser.parse_args()
    rows: Rows = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), args.studies, args.seed, size=args.size, progress=False)
        out = Path(tmp)
        check(
            f"synthetic {args.size}",
            out / "train_images",
            read_series(out / "train_series_descriptions.csv"),
            rows,
        )
    if args.real.is_dir():
        for kind in ("train", "test"):
            check(
                "real RSNA",
                args.real / f"{kind}_images",
                read_series(args.real / f"{kind}_series_descriptions.csv"),
                rows,
            )
    table = Table(
        "source",
        "true type",
        "series",
        "midline fade",
        "typed right",
        "unknown",
        "wrong",
        title=f"series typed without SeriesDescription (synthetic: {args.studies} studies, "
        f"seed {args.seed})",
    )
    for (source, true), results in sorted(rows.items()):
        fades = [f for _, f in results if f is not None]
        span = f"{min(fades):.2f}-{max(fades):.2f}" if fades else "-"
        right = sum(t == true for t, _ in results)
        unknown = sum(t is None for t, _ in results)
        table.add_row(
            source,
            true,
            str(len(results)),
            span,
            str(right),
            str(unknown),
            str(len(results) - right - unknown),
        )
    Console().print(table)


if __name__ == "__main__":
    main()
