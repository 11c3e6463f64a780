"""Dataset inspection (EDA) of an RSNA folder: `report.html`, its PNG figures and `facts.json`.

Sections: severity distribution, target correlations, missing labels, series inventory, DICOM
headers (read without pixel data, in worker processes), annotation positions and consistency
problems. It runs on the label files alone; the image sections then say plainly that there are no
images. Every fact the report states comes from one place, :attr:`InspectResult.summary`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table
from tqdm import tqdm

from spinegrade.constants import (
    AXIAL_T2,
    CONDITION_GROUPS,
    CONDITION_LABELS,
    CONDITIONS,
    LEVEL_LABELS,
    LEVELS,
    SAGITTAL_T1,
    SAGITTAL_T2,
    SERIES_OF_CONDITION,
    SERIES_TYPES,
    SEVERITIES,
    SEVERITY_LABELS,
    TARGET_COLUMNS,
    target_column,
)
from spinegrade.data.tables import RsnaTables, load_tables, validate_tables
from spinegrade.dicom.headers import list_dicom_files, read_header
from spinegrade.errors import DicomError, SpinegradeError
from spinegrade.io import write_json
from spinegrade.report import html
from spinegrade.report.figures import heatmap, new_figure, save_png, share_bars

#: A series is "oblique" when its slice normal is further than this from every patient axis.
OBLIQUE_DEG = 20.0
#: Robust z-score (median / MAD) above which an annotation position is listed as an outlier.
OUTLIER_Z = 4.0
MAX_EXAMPLES = 5
#: The slice plane each series type is expected to have (nearest patient axis of the normal).
PLANE_OF_SERIES_TYPE = {SAGITTAL_T1: "sagittal", SAGITTAL_T2: "sagittal", AXIAL_T2: "axial"}

SLICE_COLUMNS = (
    "study_id",
    "series_id",
    "instance_number",
    "rows",
    "cols",
    "row_spacing",
    "col_spacing",
    "slice_thickness",
    "manufacturer",
    "nx",
    "ny",
    "nz",
    "position",
    "path",
)
_COND_SHORT = {
    "spinal_canal_stenosis": "SCS",
    "left_neural_foraminal_narrowing": "LNFN",
    "right_neural_foraminal_narrowing": "RNFN",
    "left_subarticular_stenosis": "LSS",
    "right_subarticular_stenosis": "RSS",
}


@dataclass
class InspectResult:
    """What :func:`inspect_dataset` wrote and found.

    `summary`: the facts (also in `facts.json`); `problems`: kind, severity, count, examples (one
    row per kind); `header_failures`: path, reason (one row per unreadable file or folder).
    """

    out_dir: Path
    report: Path
    facts_path: Path
    figures: list[Path]
    summary: dict[str, Any]
    problems: pd.DataFrame
    header_failures: pd.DataFrame = field(default_factory=pd.DataFrame)


def inspect_dataset(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    split: str = "train",
    workers: int = 2,
    progress: bool = True,
) -> InspectResult:
    """Inspect the RSNA folder `root` and write `report.html`, figures (PNG) and `facts.json`.

    DICOM headers under `root/{split}_images/<study>/<series>/` are read when that folder exists
    (`workers` processes; unreadable files are listed, never fatal). Raises DataError when the
    label tables themselves cannot be read.
    """
    root, out = Path(root), Path(out_dir)
    tables = load_tables(root, split)
    if tables.labels is None or tables.coordinates is None:
        raise SpinegradeError(
            f"{root}: inspect needs the train split's labels (got split {split!r})"
        )
    images_dir = root / f"{split}_images"
    has_images = images_dir.is_dir()
    slices, failures = (
        read_headers(images_dir, workers=workers, progress=progress)
        if has_images
        else (_empty_slices(), _empty_failures())
    )
    series_info = summarise_series(slices)
    coords = annotate_coordinates(tables.coordinates, slices, series_info)
    problems = consistency_problems(
        tables, coords, slices, series_info, failures, has_images=has_images
    )
    summary = _facts(
        tables, slices, series_info, failures, coords, problems, has_images, images_dir
    )

    out.mkdir(parents=True, exist_ok=True)
    figures = _write_figures(out, tables, slices, series_info, coords)
    sections = _sections(tables, summary, series_info, failures, coords, problems, figures)
    report = html.write_page(
        out / "report.html",
        "spinegrade: dataset inspection",
        sections,
        subtitle=f"{root} ({split})",
        footer="Written by `spinegrade inspect`; offline, self-contained.",
    )
    facts_path = write_json(out / "facts.json", summary)
    return InspectResult(
        out, report, facts_path, list(figures.values()), summary, problems, failures
    )


def summary_table(result: InspectResult) -> Table:
    """The key facts and problem counts as a rich table (what the CLI prints)."""
    f = result.summary
    img = f["images"]
    table = Table("fact", "value", title=f"inspection of {f['root']}", title_justify="left")
    table.add_row("studies / series", f"{f['studies']:,} / {f['series']:,}")
    table.add_row("labelled / blank cells", f"{f['labelled_cells']:,} / {f['blank_cells']:,}")
    table.add_row(
        "class shares",
        ", ".join(f"{SEVERITY_LABELS[s]} {100 * v:.1f}%" for s, v in f["class_shares"].items()),
    )
    table.add_row(
        "coordinate rows (studies)",
        f"{f['coordinates']['rows']:,} ({f['coordinates']['studies']:,})",
    )
    table.add_row(
        "DICOM headers",
        f"{img['files_read']:,} files in {img['series_read']:,} series, "
        f"{img['header_failures']:,} failed"
        if img["present"]
        else "no images folder",
    )
    for p in result.problems.itertuples():
        style = "red" if p.severity == "error" else "yellow"
        table.add_row(f"[{style}]{p.kind}[/]", f"{p.count:,}")
    return table


# --- labels ---------------------------------------------------------------------------------------


def severity_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Counts per target: index (condition, level), columns the 3 SEVERITIES + `blank` (25 x 4)."""
    rows = []
    for column in TARGET_COLUMNS:
        values = labels[column]
        counts = values.value_counts()
        rows.append([int(counts.get(s, 0)) for s in SEVERITIES] + [int(values.isna().sum())])
    index = pd.MultiIndex.from_tuples(
        [(c, lv) for c in CONDITIONS for lv in LEVELS], names=["condition", "level"]
    )
    return pd.DataFrame(rows, index=index, columns=[*SEVERITIES, "blank"])


def with_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Counts (rows x [severities, blank]) plus share columns over the labelled cells."""
    labelled = counts[list(SEVERITIES)].sum(axis=1)
    out = counts.copy()
    for s in SEVERITIES:
        out[f"{s} %"] = 100.0 * counts[s] / labelled.replace(0, np.nan)
    return out


def ordinal_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """The 25 targets as floats 0/1/2 (NaN blank or unknown): studies x 25."""
    codes = {s: float(i) for i, s in enumerate(SEVERITIES)}
    return labels[list(TARGET_COLUMNS)].apply(lambda col: col.map(codes)).astype(float)


def target_correlation(labels: pd.DataFrame, method: str = "pearson") -> pd.DataFrame:
    """Pairwise-complete correlation of the ordinal targets (25 x 25, TARGET_COLUMNS order)."""
    return ordinal_labels(labels).corr(method=method, min_periods=10)


def missing_vs_series(tables: RsnaTables) -> pd.DataFrame:
    """Per condition: studies with a blank target and how many of them lack the condition's series.

    Columns: series type, blank cells, studies with a blank, ... of which lack the series type,
    studies lacking the series type, ... of which have a blank (5 rows).
    """
    labels, series = tables.labels, tables.series
    types = series.groupby("study_id")["series_description"].agg(set)
    rows = []
    for condition in CONDITIONS:
        stype = SERIES_OF_CONDITION[condition]
        cols = [target_column(condition, lv) for lv in LEVELS]
        blank = labels.set_index("study_id")[cols].isna()
        with_blank = set(blank.index[blank.any(axis=1)])
        lacking = {s for s in labels["study_id"] if stype not in types.get(s, set())}
        rows.append(
            {
                "condition": condition,
                "series type": stype,
                "blank cells": int(blank.to_numpy().sum()),
                "studies with a blank": len(with_blank),
                "of which lack the series": len(with_blank & lacking),
                "studies lacking the series": len(lacking),
                "of which have a blank": len(lacking & with_blank),
            }
        )
    return pd.DataFrame(rows).set_index("condition")


def series_inventory(series: pd.DataFrame) -> pd.DataFrame:
    """Series of each type per study: studies x SERIES_TYPES (+ other) counts."""
    counts = pd.crosstab(series["study_id"], series["series_description"])
    for stype in SERIES_TYPES:
        if stype not in counts:
            counts[stype] = 0
    return counts[[*SERIES_TYPES, *sorted(set(counts) - set(SERIES_TYPES))]]


# --- DICOM headers --------------------------------------------------------------------------------


def series_dirs(images_dir: Path) -> list[Path]:
    """The `<study>/<series>` folders under an images folder, sorted."""
    return sorted(p for p in images_dir.glob("*/*") if p.is_dir())


def read_headers(
    images_dir: str | os.PathLike[str], *, workers: int = 2, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the headers (no pixel data) of every series under `images_dir` in `workers` processes.

    Returns `(slices, failures)`: one row per readable file with SLICE_COLUMNS, and one row
    (path, reason) per file or folder that could not be used.
    """
    dirs = series_dirs(Path(images_dir))
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    bar = dict(total=len(dirs), desc="DICOM headers", unit="series", disable=not progress)
    if workers > 1 and len(dirs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_series_headers, dirs, chunksize=max(1, len(dirs) // (8 * workers)))
            for r, f in tqdm(results, **bar):
                rows += r
                failed += f
    else:
        for r, f in tqdm(map(_series_headers, dirs), **bar):
            rows += r
            failed += f
    slices = pd.DataFrame(rows, columns=list(SLICE_COLUMNS)) if rows else _empty_slices()
    return slices, pd.DataFrame(failed, columns=["path", "reason"])


def _series_headers(series_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Worker: the headers of one series as rows, and its failures (path, reason)."""
    try:
        study_id, series_id = int(series_dir.parent.name), int(series_dir.name)
    except ValueError:
        return [], [
            {"path": str(series_dir), "reason": "folder names must be <study_id>/<series_id>"}
        ]
    try:
        files = list_dicom_files(series_dir)
    except DicomError as exc:
        return [], [{"path": str(exc.path), "reason": exc.reason}]
    rows, bad = [], []
    for path in files:
        try:
            h = read_header(path)
        except DicomError as exc:
            bad.append({"path": str(exc.path), "reason": exc.reason})
            continue
        n = h.normal
        number = h.instance_number if h.instance_number is not None else _int_or_none(path.stem)
        if number is None:
            bad.append(
                {"path": str(path), "reason": "no InstanceNumber and the file name is not one"}
            )
            continue
        rows.append(
            {
                "study_id": study_id,
                "series_id": series_id,
                "instance_number": number,
                "rows": h.rows,
                "cols": h.cols,
                "row_spacing": h.pixel_spacing[0],
                "col_spacing": h.pixel_spacing[1],
                "slice_thickness": np.nan if h.slice_thickness is None else h.slice_thickness,
                "manufacturer": h.manufacturer or "",
                "nx": float(n[0]),
                "ny": float(n[1]),
                "nz": float(n[2]),
                "position": float(np.dot(h.position, n)),
                "path": str(path),
            }
        )
    return rows, bad


def _empty_slices() -> pd.DataFrame:
    """A slice table with no rows but the right columns and dtypes."""
    text = {"manufacturer", "path"}
    ints = {"study_id", "series_id", "instance_number", "rows", "cols"}
    return pd.DataFrame(
        {
            c: pd.Series(dtype=object if c in text else "int64" if c in ints else float)
            for c in SLICE_COLUMNS
        }
    )


def _empty_failures() -> pd.DataFrame:
    return pd.DataFrame(columns=["path", "reason"])


def _int_or_none(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def plane_of_normal(normal: Iterable[float], oblique_deg: float = OBLIQUE_DEG) -> str:
    """`sagittal` / `coronal` / `axial` when the slice normal is within `oblique_deg` of the
    patient x / y / z axis, else `oblique`."""
    n = np.abs(np.asarray(list(normal), dtype=float))
    norm = float(np.linalg.norm(n))
    if not norm or not np.isfinite(norm):
        return "unknown"
    k = int(np.argmax(n))
    if n[k] / norm < math.cos(math.radians(oblique_deg)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[k]


def summarise_series(slices: pd.DataFrame) -> pd.DataFrame:
    """One row per series read: slices, image size(s), spacing, thickness, plane, tilt, maker.

    Index (study_id, series_id).
    """
    if slices.empty:
        return pd.DataFrame(
            columns=[
                "slices",
                "size",
                "sizes",
                "row_spacing",
                "col_spacing",
                "slice_thickness",
                "plane",
                "nearest_plane",
                "tilt_deg",
                "manufacturer",
            ]
        )
    g = slices.groupby(["study_id", "series_id"], sort=True)
    size = slices["rows"].astype(str) + "x" + slices["cols"].astype(str)
    normal = g[["nx", "ny", "nz"]].median()
    unit = normal.div(np.linalg.norm(normal.to_numpy(), axis=1), axis=0)
    out = pd.DataFrame(
        {
            "slices": g.size(),
            "size": size.groupby([slices["study_id"], slices["series_id"]]).agg(
                lambda s: s.mode().iat[0]
            ),
            "sizes": size.groupby([slices["study_id"], slices["series_id"]]).nunique(),
            "row_spacing": g["row_spacing"].median(),
            "col_spacing": g["col_spacing"].median(),
            "slice_thickness": g["slice_thickness"].median(),
            "plane": [plane_of_normal(n) for n in unit.to_numpy()],
            "nearest_plane": [plane_of_normal(n, oblique_deg=90.0) for n in unit.to_numpy()],
            "tilt_deg": np.degrees(np.arccos(np.clip(unit.abs().max(axis=1), 0, 1))),
            "manufacturer": g["manufacturer"].agg(lambda s: s.mode().iat[0] if len(s) else ""),
        }
    )
    return out


def relative_slice_index(slices: pd.DataFrame) -> pd.Series:
    """Each slice's place in its series after sorting by position along the normal: 0..1.

    Index like `slices`; a single-slice series gives 0.5.
    """
    rank = slices.groupby(["study_id", "series_id"])["position"].rank(method="first") - 1
    n = slices.groupby(["study_id", "series_id"])["position"].transform("size")
    return (rank / (n - 1).where(n > 1)).fillna(0.5)


# --- annotations ----------------------------------------------------------------------------------


def annotate_coordinates(
    coords: pd.DataFrame, slices: pd.DataFrame, series_info: pd.DataFrame
) -> pd.DataFrame:
    """The coordinate rows with image facts joined in (NaN without images).

    Adds: `rows, cols` of the named instance, `x_norm, y_norm` (x / cols, y / rows), `rel_index`
    (0..1 after spatial sort), `series_read` (its folder was read), `nearest_plane` (the patient
    axis nearest the series' slice normal: sagittal/coronal/axial), `instance_found`, `outside`,
    and `outlier` (robust z of the position within its condition/level > OUTLIER_Z).
    """
    out = coords.copy()
    slim = slices.assign(rel_index=relative_slice_index(slices) if len(slices) else [])[
        ["study_id", "series_id", "instance_number", "rows", "cols", "rel_index"]
    ].drop_duplicates(["study_id", "series_id", "instance_number"])
    out = out.merge(slim, on=["study_id", "series_id", "instance_number"], how="left")
    read = set(series_info.index) if len(series_info) else set()
    out["series_read"] = [(s, r) in read for s, r in zip(out["study_id"], out["series_id"])]
    nearest = series_info["nearest_plane"].to_dict() if len(series_info) else {}
    out["nearest_plane"] = [nearest.get((s, r)) for s, r in zip(out["study_id"], out["series_id"])]
    out["instance_found"] = out["rows"].notna()
    out["x_norm"] = out["x"] / out["cols"]
    out["y_norm"] = out["y"] / out["rows"]
    out["outside"] = out["instance_found"] & ~(
        (out["x"] >= 0) & (out["x"] < out["cols"]) & (out["y"] >= 0) & (out["y"] < out["rows"])
    )
    px, py = ("x_norm", "y_norm") if out["instance_found"].any() else ("x", "y")
    z = out.groupby(["condition", "level"])[[px, py]].transform(_robust_z).abs().max(axis=1)
    out["outlier"] = z > OUTLIER_Z
    out["outlier_z"] = z
    return out


def _robust_z(values: pd.Series) -> pd.Series:
    """(v - median) / (1.4826 * MAD); 0 where the spread is 0 or unknown."""
    med = values.median()
    mad = 1.4826 * (values - med).abs().median()
    return ((values - med) / mad).fillna(0.0) if mad and np.isfinite(mad) else values * 0.0


def consistency_problems(
    tables: RsnaTables,
    coords: pd.DataFrame,
    slices: pd.DataFrame,
    series_info: pd.DataFrame,
    failures: pd.DataFrame,
    *,
    has_images: bool,
) -> pd.DataFrame:
    """`validate_tables`'s problems plus the coordinate and image checks made here.

    One row per kind: kind, severity, count, examples (a list of up to MAX_EXAMPLES strings).
    """
    rows = [
        {"kind": p.kind, "severity": p.severity, "count": p.count, "examples": p.examples}
        for p in validate_tables(tables).problems
    ]

    def add(kind: str, frame: pd.DataFrame, severity: str, detail=lambda r: "") -> None:
        if len(frame):
            examples = [
                f"study {r.study_id} "
                + (
                    f"series {r.series_id} instance {r.instance_number} "
                    if r.series_id != "-"
                    else ""
                )
                + f"{r.condition} {r.level}{detail(r)}"
                for r in frame.head(MAX_EXAMPLES).itertuples()
            ]
            rows.append(
                {"kind": kind, "severity": severity, "count": len(frame), "examples": examples}
            )

    add("labelled targets without coordinates", _labelled_without_coordinates(tables), "warning")
    if has_images:
        add("coordinates on a series without images", coords[~coords["series_read"]], "error")
        add(
            "instance number not in the series",
            coords[coords["series_read"] & ~coords["instance_found"]],
            "error",
        )
        add(
            "coordinates outside the image",
            coords[coords["outside"]],
            "error",
            lambda r: f": x={r.x:.1f}, y={r.y:.1f} on {int(r.cols)}x{int(r.rows)} (cols x rows)",
        )
        expected = coords["condition"].map(SERIES_OF_CONDITION).map(PLANE_OF_SERIES_TYPE)
        wrong = coords["series_read"] & expected.notna() & (coords["nearest_plane"] != expected)
        add(
            "coordinates on a series whose slice plane does not fit",
            coords[wrong],
            "warning",
            lambda r: (
                f" (slices nearest {r.nearest_plane}, "
                f"expected {PLANE_OF_SERIES_TYPE[SERIES_OF_CONDITION[r.condition]]})"
            ),
        )
        if len(series_info) and (series_info["sizes"] > 1).any():
            mixed = series_info[series_info["sizes"] > 1]
            rows.append(
                {
                    "kind": "series with several image sizes",
                    "severity": "warning",
                    "count": len(mixed),
                    "examples": [f"study {s} series {r}" for s, r in mixed.index[:MAX_EXAMPLES]],
                }
            )
        read = set(zip(slices["study_id"], slices["series_id"]))
        listed = tables.series[
            [
                (s, r) not in read
                for s, r in zip(tables.series["study_id"], tables.series["series_id"])
            ]
        ]
        if len(listed):
            rows.append(
                {
                    "kind": "described series without readable images",
                    "severity": "warning",
                    "count": len(listed),
                    "examples": [
                        f"study {r.study_id} series {r.series_id} ({r.series_description})"
                        for r in listed.head(MAX_EXAMPLES).itertuples()
                    ],
                }
            )
        if len(failures):
            rows.append(
                {
                    "kind": "unreadable DICOM files or folders",
                    "severity": "error",
                    "count": len(failures),
                    "examples": [
                        f"{r.path}: {r.reason}" for r in failures.head(MAX_EXAMPLES).itertuples()
                    ],
                }
            )
    add(
        "annotation position outliers",
        coords[coords["outlier"]].sort_values("outlier_z", ascending=False),
        "warning",
        lambda r: f" (robust z {r.outlier_z:.1f})",
    )
    return pd.DataFrame(rows, columns=["kind", "severity", "count", "examples"])


def _labelled_without_coordinates(tables: RsnaTables) -> pd.DataFrame:
    """Labelled targets of studies that have coordinates, but none for that condition/level.

    Only studies present in the coordinate file count (the shipped subset covers ~20% of them).
    Columns like the coordinate table (series_id and instance_number are '-').
    """
    coords = tables.coordinates
    studies = set(coords["study_id"])
    labels = tables.labels[tables.labels["study_id"].isin(studies)]
    long = labels.melt(
        id_vars="study_id",
        value_vars=list(TARGET_COLUMNS),
        var_name="target",
        value_name="severity",
    ).dropna(subset=["severity"])
    have = set(
        zip(coords["study_id"], coords["condition"].astype(str) + "_" + coords["level"].astype(str))
    )
    missing = long[[(s, t) not in have for s, t in zip(long["study_id"], long["target"])]]
    cond_level = {target_column(c, lv): (c, lv) for c in CONDITIONS for lv in LEVELS}
    return pd.DataFrame(
        {
            "study_id": missing["study_id"].to_numpy(),
            "series_id": "-",
            "instance_number": "-",
            "condition": [cond_level[t][0] for t in missing["target"]],
            "level": [cond_level[t][1] for t in missing["target"]],
        }
    ).sort_values(["study_id", "condition", "level"])


# --- facts ----------------------------------------------------------------------------------------


def _facts(tables, slices, series_info, failures, coords, problems, has_images, images_dir) -> dict:
    """Everything the report and the CLI state, JSON-ready."""
    labels, series = tables.labels, tables.series
    counts = severity_counts(labels)
    total = counts[list(SEVERITIES)].sum()
    inv = series_inventory(series)
    on_type = pd.crosstab(coords["condition"], coords["series_description"].fillna("not described"))
    facts: dict[str, Any] = {
        "root": str(tables.root),
        "split": tables.split,
        "studies": int(labels["study_id"].nunique()),
        "series": int(len(series)),
        "studies_with_series": int(series["study_id"].nunique()),
        "labelled_cells": int(total.sum()),
        "blank_cells": int(counts["blank"].sum()),
        "class_counts": {s: int(total[s]) for s in SEVERITIES},
        "class_shares": {s: round(float(total[s] / total.sum()), 4) for s in SEVERITIES},
        "series_types": {k: int(v) for k, v in series["series_description"].value_counts().items()},
        "series_per_study": {
            int(k): int(v) for k, v in inv.sum(axis=1).value_counts().sort_index().items()
        },
        "studies_lacking_type": {t: int((inv[t] == 0).sum()) for t in SERIES_TYPES},
        "studies_with_several_of_type": {t: int((inv[t] > 1).sum()) for t in SERIES_TYPES},
        "coordinates": {
            "rows": int(len(coords)),
            "studies": int(coords["study_id"].nunique()),
            "normalised": bool(coords["instance_found"].any()),
            "on_series_type": {
                c: {t: int(n) for t, n in on_type.loc[c].items() if n} for c in on_type.index
            },
        },
        "images": {
            "present": has_images,
            "folder": str(images_dir),
            "series_read": int(len(series_info)),
            "files_read": int(len(slices)),
            "header_failures": int(len(failures)),
        },
        "problems": {r.kind: int(r.count) for r in problems.itertuples()},
    }
    if has_images and len(series_info):
        facts["images"].update(
            {
                "slices_per_series": {
                    k: int(v)
                    for k, v in series_info["slices"]
                    .describe()[["min", "50%", "max"]]
                    .rename({"50%": "median"})
                    .items()
                },
                "image_sizes": {k: int(v) for k, v in series_info["size"].value_counts().items()},
                "planes": {k: int(v) for k, v in series_info["plane"].value_counts().items()},
                "manufacturers": {
                    (k or "unknown"): int(v)
                    for k, v in series_info["manufacturer"].value_counts().items()
                },
            }
        )
    return facts


# --- figures --------------------------------------------------------------------------------------


def _write_figures(out: Path, tables, slices, series_info, coords) -> dict[str, Path]:
    """All PNGs of the report, by name."""
    labels, series = tables.labels, tables.series
    figs = {
        "severity": _fig_severity(severity_counts(labels)),
        "correlation": _fig_correlation(target_correlation(labels)),
        "correlation_groups": _fig_correlation_groups(target_correlation(labels)),
        "missing": _fig_missing(severity_counts(labels)),
        "series": _fig_series(series_inventory(series)),
        "positions": _fig_positions(coords),
        "slice_positions": _fig_slice_positions(coords),
    }
    if len(series_info):
        figs["headers"] = _fig_headers(series_info, slices)
    return {name: save_png(fig, out / f"{name}.png") for name, fig in figs.items()}


def _fig_severity(counts: pd.DataFrame):
    fig, axes = new_figure(12, 6.2, 2, 3)
    sev = counts[list(SEVERITIES)].rename(columns=SEVERITY_LABELS)
    for ax, condition in zip(axes.flat, CONDITIONS):
        share_bars(ax, sev.loc[condition].rename(index=LEVEL_LABELS))
        ax.set_title(CONDITION_LABELS[condition], fontsize=10)
    by_condition = sev.groupby(level="condition").sum().loc[list(CONDITIONS)]
    by_condition.index = [_COND_SHORT[c] for c in by_condition.index]
    overall = sev.sum().to_frame("all").T
    share_bars(axes[1, 2], pd.concat([overall, by_condition]))
    axes[1, 2].set_title("Overall and per condition", fontsize=10)
    axes[0, 0].legend(loc="lower left", bbox_to_anchor=(0, 1.12), ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Severity shares over labelled cells", fontsize=12)
    return fig


def _short_target(column: str) -> str:
    for c in CONDITIONS:
        if column.startswith(c + "_"):
            return f"{_COND_SHORT[c]} {LEVEL_LABELS[column[len(c) + 1 :]]}"
    return column


def _fig_correlation(corr: pd.DataFrame):
    fig, axes = new_figure(8.5, 7.2)
    ax = axes[0, 0]
    heatmap(ax, corr.rename(index=_short_target, columns=_short_target))
    for k in range(5, 25, 5):
        ax.axhline(k - 0.5, color="black", lw=0.8)
        ax.axvline(k - 0.5, color="black", lw=0.8)
    ax.set_title("Correlation of the 25 targets (ordinal 0/1/2, pairwise complete)", fontsize=10)
    return fig


def _fig_correlation_groups(corr: pd.DataFrame):
    fig, axes = new_figure(15, 5.2, 1, 3, width_ratios=[5, 10, 10])
    for ax, (group, conditions) in zip(axes.flat, CONDITION_GROUPS.items()):
        cols = [target_column(c, lv) for c in conditions for lv in LEVELS]
        block = corr.loc[cols, cols].rename(index=_short_target, columns=_short_target)
        heatmap(ax, block, annotate=True, colorbar=False)
        ax.set_title(f"{group} group", fontsize=10)
        ax.set_aspect("equal")
    return fig


def _fig_missing(counts: pd.DataFrame):
    fig, axes = new_figure(12, 3.2)
    ax = axes[0, 0]
    blank = counts["blank"]
    ax.bar(range(len(blank)), blank.to_numpy(), color="#6e7781")
    ax.set_xticks(
        range(len(blank)),
        [f"{_COND_SHORT[c]} {LEVEL_LABELS[lv]}" for c, lv in blank.index],
        rotation=90,
        fontsize=7,
    )
    ax.set_ylabel("blank labels (studies)")
    ax.set_title("Blank (not scored) labels per target", fontsize=10)
    return fig


def _fig_series(inv: pd.DataFrame):
    fig, axes = new_figure(12, 3.2, 1, 2)
    per_study = inv.sum(axis=1).value_counts().sort_index()
    axes[0, 0].bar(per_study.index.astype(str), per_study.to_numpy(), color="#0969da")
    axes[0, 0].set_xlabel("series per study")
    axes[0, 0].set_ylabel("studies")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_title("Series per study", fontsize=10)
    kinds = {
        t: inv[t].clip(upper=3).value_counts().reindex(range(4), fill_value=0) for t in SERIES_TYPES
    }
    table = pd.DataFrame(kinds).T
    table.columns = ["0", "1", "2", "3+"]
    bottom = np.zeros(len(table))
    for k, col in enumerate(table.columns):
        axes[0, 1].barh(
            table.index,
            table[col],
            left=bottom,
            color=["#d1495b", "#4c9f70", "#f2b134", "#8250df"][k],
            label=f"{col} series",
        )
        bottom += table[col].to_numpy()
    axes[0, 1].legend(
        fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False
    )
    axes[0, 1].set_xlabel("studies")
    axes[0, 1].set_title("Series of each type per study", fontsize=10)
    return fig


def _fig_headers(info: pd.DataFrame, slices: pd.DataFrame):
    fig, axes = new_figure(12, 3.4, 1, 3)
    for plane, grp in info.groupby("plane"):
        axes[0, 0].hist(grp["slices"], bins=20, alpha=0.7, label=plane)
        axes[0, 1].scatter(grp["col_spacing"], grp["row_spacing"], s=12, alpha=0.7, label=plane)
        axes[0, 2].hist(grp["slice_thickness"].dropna(), bins=20, alpha=0.7, label=plane)
    axes[0, 0].set(xlabel="slices per series", ylabel="series", title="Slices per series")
    axes[0, 1].set(
        xlabel="column spacing dx (mm)", ylabel="row spacing dy (mm)", title="Pixel spacing"
    )
    axes[0, 2].set(xlabel="slice thickness (mm)", ylabel="series", title="Slice thickness")
    for ax in axes.flat:
        ax.title.set_fontsize(10)
        ax.legend(fontsize=8)
    return fig


def _fig_positions(coords: pd.DataFrame):
    normalised = bool(coords["instance_found"].any())
    px, py = ("x_norm", "y_norm") if normalised else ("x", "y")
    fig, axes = new_figure(15, 3.6, 1, 5, sharex=True, sharey=True)
    colors = ["#0969da", "#4c9f70", "#f2b134", "#d1495b", "#8250df"]
    size = 3 if len(coords) > 2000 else 12
    for ax, condition in zip(axes.flat, CONDITIONS):
        sub = coords[coords["condition"] == condition]
        for color, level in zip(colors, LEVELS):
            pts = sub[sub["level"] == level]
            ax.scatter(pts[px], pts[py], s=size, alpha=0.5, color=color, label=LEVEL_LABELS[level])
        bad = sub[sub["outlier"]]
        ax.scatter(bad[px], bad[py], s=30, facecolors="none", edgecolors="black", lw=0.8)
        ax.set_title(CONDITION_LABELS[condition], fontsize=9)
        ax.set_xlabel("x / columns" if normalised else "x (pixels)")
    axes[0, 0].invert_yaxis()
    axes[0, 0].set_ylabel("y / rows" if normalised else "y (pixels)")
    axes[0, 0].legend(fontsize=7, markerscale=3, loc="lower left")
    return fig


def _fig_slice_positions(coords: pd.DataFrame):
    found = coords[coords["instance_found"]]
    fig, axes = new_figure(15, 3.0, 1, 5, sharey=False)
    for ax, condition in zip(axes.flat, CONDITIONS):
        sub = found if len(found) else coords
        sub = sub[sub["condition"] == condition]
        values = sub["rel_index"] if len(found) else sub["instance_number"]
        ax.hist(values.dropna(), bins=20, color="#0969da")
        ax.set_title(CONDITION_LABELS[condition], fontsize=9)
        ax.set_xlabel("relative slice index (spatial sort)" if len(found) else "instance number")
    axes[0, 0].set_ylabel("points")
    return fig


# --- HTML -----------------------------------------------------------------------------------------


def _sections(
    tables, facts, series_info, failures, coords, problems, figures
) -> list[html.Section]:
    labels = tables.labels
    counts = severity_counts(labels)
    shares = facts["class_shares"]
    img = facts["images"]
    n_problems = (
        int(problems.loc[problems["severity"] == "error", "count"].sum()) if len(problems) else 0
    )
    overview = html.cards(
        {
            "studies": facts["studies"],
            "series": facts["series"],
            "labelled cells": facts["labelled_cells"],
            "blank cells": facts["blank_cells"],
            **{SEVERITY_LABELS[s]: f"{100 * shares[s]:.1f}%" for s in SEVERITIES},
            "coordinate rows": facts["coordinates"]["rows"],
            "DICOM files read": img["files_read"] if img["present"] else "no images",
            "error-level problems": n_problems,
        }
    )
    if not img["present"]:
        overview += html.note(
            f"No images: {img['folder']} does not exist, so the DICOM header "
            "sections are empty and annotation positions are in raw pixels."
        )
    return [
        html.Section("Overview", overview),
        html.Section("Severity distribution", _severity_section(counts, figures)),
        html.Section("Target correlations", _correlation_section(labels, figures)),
        html.Section("Missing labels", _missing_section(tables, counts, figures)),
        html.Section("Series", _series_section(tables, facts, figures)),
        html.Section("DICOM headers", _header_section(facts, series_info, failures, figures)),
        html.Section("Annotation positions", _position_section(coords, figures)),
        html.Section("Consistency problems", _problem_section(problems)),
    ]


def _severity_section(counts: pd.DataFrame, figures: dict[str, Path]) -> str:
    def named(frame: pd.DataFrame) -> pd.DataFrame:
        return with_shares(frame).rename(
            columns=lambda c: " ".join(SEVERITY_LABELS.get(w, w) for w in str(c).split(" "))
        )

    by_condition = named(counts.groupby(level="condition").sum().loc[list(CONDITIONS)])
    by_condition.index = [CONDITION_LABELS[c] for c in by_condition.index]
    by_level = named(counts.groupby(level="level").sum().loc[list(LEVELS)])
    by_level.index = [LEVEL_LABELS[lv] for lv in by_level.index]
    overall = named(counts.sum().to_frame("all targets").T)
    per_target = named(counts)
    per_target.index = [f"{CONDITION_LABELS[c]} {LEVEL_LABELS[lv]}" for c, lv in counts.index]
    fmt = "{:,.1f}"
    return (
        html.figure(
            figures["severity"],
            "Shares of Normal/Mild, Moderate and Severe over labelled "
            "cells, per condition and level.",
        )
        + html.table(
            pd.concat([overall, by_condition, by_level]),
            float_format=fmt,
            caption="Counts overall, per condition and per level; shares in % of labelled cells",
        )
        + html.details("Per target (25 rows)", html.table(per_target, float_format=fmt))
    )


def _correlation_section(labels: pd.DataFrame, figures: dict[str, Path]) -> str:
    corr = target_correlation(labels)
    upper = corr.where(np.triu(np.ones(corr.shape, dtype=bool), k=1)).stack().dropna()
    top = upper.sort_values(ascending=False).head(10).rename("r").reset_index()
    top.columns = ["target A", "target B", "r"]
    return (
        html.figure(
            figures["correlation"],
            "Pearson correlation of ordinal severities (0/1/2), "
            "pairwise complete; lines separate the five conditions.",
        )
        + html.figure(
            figures["correlation_groups"], "The same correlations within each metric group."
        )
        + html.table(
            top, caption="Most correlated target pairs", index=False, float_format="{:.3f}"
        )
    )


def _missing_section(tables: RsnaTables, counts: pd.DataFrame, figures: dict[str, Path]) -> str:
    labels = tables.labels
    blank = labels.set_index("study_id")[list(TARGET_COLUMNS)].isna()
    per_study = blank.sum(axis=1)
    hist = per_study[per_study > 0].value_counts().sort_index().rename("studies").to_frame()
    hist.index.name = "blank targets in the study"
    worst = per_study[per_study > 0].sort_values(ascending=False).head(15)
    worst_rows = pd.DataFrame(
        {
            "blank": worst,
            "blank targets": [
                ", ".join(_short_target(c) for c in blank.columns[blank.loc[s]])
                for s in worst.index
            ],
        }
    )
    rel = missing_vs_series(tables).rename(index=CONDITION_LABELS)
    return (
        html.figure(figures["missing"], "Blank labels per target.")
        + html.p(
            f"{int(per_study.gt(0).sum()):,} of {len(per_study):,} studies have at least one "
            f"blank target ({int(blank.to_numpy().sum()):,} blank cells)."
        )
        + html.table(
            rel, caption="Blank labels and missing series (series type each condition is graded on)"
        )
        + '<div class="grid2">'
        + html.table(hist, caption="Studies by number of blank targets")
        + html.table(worst_rows, caption="Studies with the most blank targets")
        + "</div>"
    )


def _series_section(tables: RsnaTables, facts: dict, figures: dict[str, Path]) -> str:
    inv = series_inventory(tables.series)
    kinds = (
        pd.DataFrame(
            {
                "series": pd.Series(facts["series_types"]),
                "studies lacking it": pd.Series(facts["studies_lacking_type"]),
                "studies with several": pd.Series(facts["studies_with_several_of_type"]),
            }
        )
        .fillna(0)
        .astype(int)
    )
    odd = inv[(inv[list(SERIES_TYPES)] == 0).any(axis=1)].rename_axis(columns=None)
    several = inv[(inv[list(SERIES_TYPES)] > 1).any(axis=1)].rename_axis(columns=None)
    return (
        html.figure(
            figures["series"], "Series per study, and how many series of each type a study has."
        )
        + html.table(kinds, caption="Series types")
        + html.table(odd.reset_index(), caption="Studies lacking a series type", index=False)
        + html.details(
            f"Studies with several series of one type ({len(several):,})",
            html.table(several.reset_index(), index=False, max_rows=200),
        )
    )


def _header_section(facts: dict, info: pd.DataFrame, failures: pd.DataFrame, figures) -> str:
    img = facts["images"]
    if not img["present"]:
        return html.note(
            f"No images: {img['folder']} does not exist. Slices per series, image sizes, "
            "pixel spacing, slice thickness, orientation and manufacturer need the DICOM files."
        )
    body = html.p(
        f"{img['files_read']:,} files in {img['series_read']:,} series read without pixel "
        f"data; {img['header_failures']:,} file(s) or folder(s) could not be read."
    )
    if "headers" in figures:
        body += html.figure(
            figures["headers"], "Slices per series, pixel spacing and slice thickness by plane."
        )
    if len(info):
        planes = info.groupby("plane").agg(
            series=("slices", "size"),
            slices_median=("slices", "median"),
            tilt_deg_max=("tilt_deg", "max"),
        )
        sizes = info["size"].value_counts().rename("series").to_frame()
        sizes.index.name = "rows x cols"
        makers = (
            info["manufacturer"]
            .replace("", "(not given)")
            .value_counts()
            .rename("series")
            .to_frame()
        )
        body += (
            '<div class="grid2">'
            + html.table(
                planes,
                caption="Orientation (plane by slice normal, "
                f"oblique beyond {OBLIQUE_DEG:.0f} degrees)",
            )
            + html.table(sizes, caption="Image sizes")
            + "</div>"
            + html.table(makers, caption="Manufacturer")
        )
        body += html.details(
            "Per series",
            html.table(info.reset_index(), index=False, max_rows=500, float_format="{:.2f}"),
        )
    if len(failures):
        body += html.h3("Header failures") + html.table(failures, index=False, max_rows=200)
    return body


def _position_section(coords: pd.DataFrame, figures: dict[str, Path]) -> str:
    normalised = bool(coords["instance_found"].any())
    note = (
        ""
        if normalised
        else html.note(
            "No images: positions are raw pixels (image sizes unknown) and the slice plot shows "
            "raw "
            "instance numbers, not positions after a spatial sort."
        )
    )
    stats = (
        coords.groupby(["condition", "level"])[["x_norm", "y_norm"] if normalised else ["x", "y"]]
        .agg(["median", "std"])
        .round(3)
    )
    stats.index = [f"{CONDITION_LABELS[c]} {LEVEL_LABELS[lv]}" for c, lv in stats.index]
    stats.columns = [" ".join(c) for c in stats.columns]
    out = coords[coords["outlier"]].sort_values("outlier_z", ascending=False)
    cols = ["study_id", "series_id", "instance_number", "condition", "level", "x", "y", "outlier_z"]
    return (
        note
        + html.figure(
            figures["positions"],
            "Annotated points per condition, coloured by level "
            f"(circled: robust z > {OUTLIER_Z:g} within their condition and level).",
        )
        + html.figure(figures["slice_positions"], "Where in the series the annotated slice lies.")
        + html.details("Median and spread per condition and level", html.table(stats))
        + html.table(
            out[cols],
            caption=f"Outliers ({len(out):,})",
            index=False,
            max_rows=30,
            float_format="{:.1f}",
        )
    )


def _problem_section(problems: pd.DataFrame) -> str:
    if problems.empty:
        return html.p("No problems found.")
    rows = "".join(
        f'<tr><td class="text">{html.esc(p.kind)}</td>'
        f'<td class="text {"bad" if p.severity == "error" else ""}">{html.esc(p.severity)}</td>'
        f"<td>{p.count:,}</td>"
        f'<td class="text">{html.bullets(p.examples)}</td></tr>'
        for p in problems.itertuples()
    )
    head = (
        '<tr><th>kind</th><th class="text">severity</th><th>count</th>'
        '<th class="text">examples (first few)</th></tr>'
    )
    return f'<table class="df">{head}{rows}</table>'
