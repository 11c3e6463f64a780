"""Facts of an RSNA folder, for inspection: label statistics, series, DICOM headers, positions,
consistency problems. Computed here from the tables and the headers; drawn by
`spinegrade.report.inspect`.

Headers are read without pixel data, in worker processes. Everything works on the label files
alone: the image facts then say plainly that there are no images.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydicom.uid import UID
from tqdm import tqdm

from spinegrade.constants import (
    AXIAL_T2,
    CONDITIONS,
    LEVELS,
    SAGITTAL_T1,
    SAGITTAL_T2,
    SERIES_OF_CONDITION,
    SERIES_TYPES,
    SEVERITIES,
    TARGET_COLUMNS,
    target_column,
)
from spinegrade.data.tables import RsnaTables, image_coverage, load_tables, validate_tables
from spinegrade.dicom import Study
from spinegrade.dicom.geometry import plane_of
from spinegrade.dicom.headers import list_dicom_files, read_header
from spinegrade.errors import DicomError, SpinegradeError

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
    "px",
    "py",
    "pz",
    "description",
    "sop_class",
    "transfer_syntax",
    "bits_stored",
    "path",
)


@dataclass
class DatasetFacts:
    """Everything `spinegrade inspect` reports about one RSNA folder.

    `slices`: one row per readable DICOM file (SLICE_COLUMNS); `series_info`: one row per series
    read; `coords`: the coordinate rows with image facts joined in; `problems`: kind, severity,
    count, examples; `failures`: path, reason of each unreadable file; `summary`: the key facts
    (what `facts.json` holds).
    """

    root: Path
    tables: RsnaTables
    slices: pd.DataFrame
    series_info: pd.DataFrame
    failures: pd.DataFrame
    coords: pd.DataFrame
    problems: pd.DataFrame
    summary: dict[str, Any]


def dataset_facts(
    root: str | os.PathLike[str], *, split: str = "train", workers: int = 2, progress: bool = True
) -> DatasetFacts:
    """The facts of the RSNA folder `root`.

    DICOM headers under `root/{split}_images/<study>/<series>/` are read when that folder exists
    (`workers` processes; unreadable files are listed, never fatal). Raises DataError when the
    label tables themselves cannot be read.
    """
    root = Path(root)
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
    return DatasetFacts(root, tables, slices, series_info, failures, coords, problems, summary)


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
                "px": float(h.position[0]),
                "py": float(h.position[1]),
                "pz": float(h.position[2]),
                "description": h.description,
                "sop_class": _uid_name(h.sop_class_uid),
                "transfer_syntax": _uid_name(h.transfer_syntax),
                "bits_stored": np.nan if h.bits_stored is None else h.bits_stored,
                "path": str(path),
            }
        )
    return rows, bad


def _empty_slices() -> pd.DataFrame:
    """A slice table with no rows but the right columns and dtypes."""
    text = {"manufacturer", "path", "description", "sop_class", "transfer_syntax"}
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


#: Columns of `summarise_series`: the DICOM facts of a series that users look at first.
SERIES_COLUMNS = (
    "slices",
    "size",
    "sizes",
    "row_spacing",
    "col_spacing",
    "slice_thickness",
    "plane",
    "nearest_plane",
    "tilt_deg",
    "orientations",
    "first_instance_at",
    "description",
    "sop_class",
    "transfer_syntax",
    "bits_stored",
    "manufacturer",
)
#: Orientations closer than this (ImageOrientationPatient components) count as one block.
_ORIENTATION_DECIMALS = 2


def summarise_series(slices: pd.DataFrame) -> pd.DataFrame:
    """One row per series read (`SERIES_COLUMNS`), index (study_id, series_id): slices, image
    size(s), spacing, thickness, plane and tilt, how many orientations (tilted blocks in one
    series), where instance 1 lies (sagittal: patient left or right; axial: superior or
    inferior), the header's description, SOP class, transfer syntax, bits stored and maker."""
    if slices.empty:
        return pd.DataFrame(columns=list(SERIES_COLUMNS))
    keys = [slices["study_id"], slices["series_id"]]
    g = slices.groupby(["study_id", "series_id"], sort=True)
    size = slices["rows"].astype(str) + "x" + slices["cols"].astype(str)
    normal = g[["nx", "ny", "nz"]].median()
    unit = normal.div(np.linalg.norm(normal.to_numpy(), axis=1), axis=0)
    orient = (
        slices[["nx", "ny", "nz"]].round(_ORIENTATION_DECIMALS).astype(str).agg("/".join, axis=1)
    )
    plane = [plane_of(n) for n in unit.to_numpy()]

    def mode(column: str) -> pd.Series:
        return g[column].agg(lambda v: v.mode().iat[0] if v.notna().any() else None)

    out = pd.DataFrame(
        {
            "slices": g.size(),
            "size": size.groupby(keys).agg(lambda v: v.mode().iat[0]),
            "sizes": size.groupby(keys).nunique(),
            "row_spacing": g["row_spacing"].median(),
            "col_spacing": g["col_spacing"].median(),
            "slice_thickness": g["slice_thickness"].median(),
            "plane": plane,
            "nearest_plane": [plane_of(n, tolerance_deg=90.0) for n in unit.to_numpy()],
            "tilt_deg": np.degrees(np.arccos(np.clip(unit.abs().max(axis=1), 0, 1))),
            "orientations": orient.groupby(keys).nunique(),
            "description": mode("description"),
            "sop_class": mode("sop_class"),
            "transfer_syntax": mode("transfer_syntax"),
            "bits_stored": mode("bits_stored"),
            "manufacturer": g["manufacturer"].agg(lambda v: v.mode().iat[0] if len(v) else ""),
        }
    )
    out["first_instance_at"] = [_first_instance_at(grp, pl) for (_, grp), pl in zip(g, plane)]
    return out[list(SERIES_COLUMNS)]


def _first_instance_at(slices: pd.DataFrame, plane: str) -> str:
    """Where the lowest InstanceNumber lies in its series: patient left/right (sagittal, by LPS x)
    or superior/inferior (axial, by LPS z); '' for other planes or a single slice."""
    axis, names = {
        "sagittal": ("px", ("patient right", "patient left")),
        "axial": ("pz", ("inferior", "superior")),
    }.get(plane, (None, ()))
    if axis is None or slices["instance_number"].nunique() < 2:
        return ""
    ordered = slices.sort_values("instance_number")
    first, last = ordered[axis].iloc[0], ordered[axis].iloc[-1]
    return "" if first == last else names[int(first > last)]


def _uid_name(uid: str) -> str:
    """A UID's registered name (`RLE Lossless`, `Enhanced MR Image Storage`), else the UID."""
    name = UID(uid).name if uid else ""
    return name or uid


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
        downloaded = set(image_coverage(tables).with_images)  # a partial download is no problem
        listed = tables.series[
            [
                s in downloaded and (s, r) not in read
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


def _types_of_read_series(series: pd.DataFrame, series_info: pd.DataFrame) -> dict[str, str]:
    """`{"study/series": description in the table}` of the series whose headers were read."""
    read = set(series_info.index)
    rows = zip(series["study_id"], series["series_id"], series["series_description"])
    return {f"{a}/{b}": d for a, b, d in rows if (a, b) in read}


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
        "series_type_of": _types_of_read_series(series, series_info),
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
            "coverage": image_coverage(tables).to_dict(),
            "coverage_line": image_coverage(tables).summary(),
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


def labelled_targets(study: Study, coords: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """One study's labelled points where they were marked, for drawing (`report.overlays`).

    `coords`: its coordinate rows (snake_case condition/level); `labels`: the wide labels table.
    One row per point found in the study: `condition, level, series_id, stack_index, slice_index,
    instance_number, x, y, grade` (snake_case severity, NaN blank) and the three `SEVERITIES` as
    the grade one-hot (NaN where blank).
    """
    mine = labels[labels["study_id"] == study.study_id]
    rows = []
    for r in coords.itertuples(index=False):
        where = study.find_instance(int(r.series_id), int(r.instance_number))
        if where is None or not (np.isfinite(r.x) and np.isfinite(r.y)):
            continue
        column = target_column(r.condition, r.level)
        grade = mine[column].iloc[0] if len(mine) and column in mine else np.nan
        onehot = [float(grade == s) if isinstance(grade, str) else np.nan for s in SEVERITIES]
        rows.append(
            (
                r.condition,
                r.level,
                int(r.series_id),
                *where,
                int(r.instance_number),
                float(r.x),
                float(r.y),
                grade,
                *onehot,
            )
        )
    columns = [
        "condition",
        "level",
        "series_id",
        "stack_index",
        "slice_index",
        "instance_number",
        "x",
        "y",
        "grade",
        *SEVERITIES,
    ]
    return pd.DataFrame(rows, columns=columns)
