"""Dataset inspection (EDA) of an RSNA folder: `report.html`, its PNG figures and `facts.json`.

Sections: severity distribution, target correlations, missing labels, series inventory, DICOM
headers, annotation positions and consistency problems. The facts come from
`spinegrade.data.facts` (one place); this module draws them. It runs on the label files alone; the
image sections then say plainly that there are no images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from spinegrade.constants import (
    CONDITION_GROUPS,
    CONDITION_LABELS,
    CONDITIONS,
    LEVEL_LABELS,
    LEVELS,
    SERIES_TYPES,
    SEVERITIES,
    SEVERITY_LABELS,
    TARGET_COLUMNS,
    target_column,
)
from spinegrade.data.facts import (
    OUTLIER_Z,
    DatasetFacts,
    dataset_facts,
    labelled_targets,
    missing_vs_series,
    series_inventory,
    severity_counts,
    target_correlation,
    with_shares,
)
from spinegrade.data.tables import RsnaTables, image_coverage
from spinegrade.dicom import load_study
from spinegrade.dicom.geometry import PLANE_TOLERANCE_DEG
from spinegrade.errors import SpinegradeError
from spinegrade.io import write_json
from spinegrade.report import html
from spinegrade.report.figures import heatmap, new_figure, save_png, share_bars
from spinegrade.report.overlays import GRADES_LEGEND, OVERLAY_TITLES, save_overlay, study_panels

#: Studies whose labelled points are drawn on their images, and series listed one per row.
MAX_STUDIES_DRAWN = 3
MAX_SERIES_LISTED = 60

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
    out = Path(out_dir)
    f = dataset_facts(root, split=split, workers=workers, progress=progress)
    tables, slices, series_info, failures = f.tables, f.slices, f.series_info, f.failures
    coords, problems, summary = f.coords, f.problems, f.summary

    out.mkdir(parents=True, exist_ok=True)
    figures = _write_figures(out, tables, slices, series_info, coords)
    figures.update(_labelled_point_figures(out, f))
    sections = _sections(tables, summary, series_info, failures, coords, problems, figures)
    report = html.write_page(
        out / "report.html",
        "spinegrade: dataset inspection",
        sections,
        subtitle=f"{f.root} ({split})",
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
            "studies with images": f"{img['coverage']['with_images']:,}",
            "DICOM files read": img["files_read"] if img["present"] else "no images",
            "error-level problems": n_problems,
        }
    )
    if not img["present"]:
        overview += html.note(
            f"No images: {img['folder']} does not exist, so the DICOM header "
            "sections are empty and annotation positions are in raw pixels."
        )
    else:
        overview += html.note(img["coverage_line"])
    return [
        html.Section("Overview", overview),
        html.Section("Severity distribution", _severity_section(counts, figures)),
        html.Section("Target correlations", _correlation_section(labels, figures)),
        html.Section("Missing labels", _missing_section(tables, counts, figures)),
        html.Section("Series", _series_section(tables, facts, figures)),
        html.Section("DICOM headers", _header_section(facts, series_info, failures, figures)),
        html.Section("Labelled points on the images", _labelled_points_section(facts, figures)),
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
        f"data; {img['header_failures']:,} file(s) or folder(s) could not be read. "
        + img["coverage_line"]
        + "."
    )
    if 0 < len(info) <= MAX_SERIES_LISTED:
        body += html.table(
            _metadata_table(info, facts),
            index=False,
            float_format="{:.3g}",
            caption="What the headers say, per series (type: the descriptions "
            "table; blocks: distinct slice orientations, e.g. axial stacks "
            "tilted to each disc in one series)",
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
                f"oblique beyond {PLANE_TOLERANCE_DEG:.0f} degrees)",
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


def _metadata_table(info: pd.DataFrame, facts: dict[str, Any]) -> pd.DataFrame:
    """The series facts users check first, one row per series (at most MAX_SERIES_LISTED)."""
    types = facts.get("series_type_of", {})
    t = info.reset_index()
    return pd.DataFrame(
        {
            "study": t["study_id"],
            "series": t["series_id"],
            "type": [types.get(f"{a}/{b}", "") for a, b in zip(t["study_id"], t["series_id"])],
            "header description": t["description"],
            "plane": t["plane"],
            "tilt deg": t["tilt_deg"],
            "blocks": t["orientations"],
            "instance 1 at": t["first_instance_at"],
            "slices": t["slices"],
            "rows x cols": t["size"],
            "pixel mm": t["row_spacing"],
            "thickness mm": t["slice_thickness"],
            "SOP class": t["sop_class"],
            "transfer syntax": t["transfer_syntax"],
            "bits stored": t["bits_stored"],
            "manufacturer": t["manufacturer"].replace("", "-"),
        }
    )


def _labelled_point_figures(out: Path, f: DatasetFacts) -> dict[str, Path]:
    """Overlays of the labelled points on their real slices, for the first studies that have both
    images and coordinates (`labelled_<study>_<overlay>.png`)."""
    images = f.root / f"{f.tables.split}_images"
    with_points = [
        s
        for s in image_coverage(f.tables).with_images
        if s in set(f.tables.coordinates["study_id"])
    ][:MAX_STUDIES_DRAWN]
    figures: dict[str, Path] = {}
    for sid in with_points:
        try:
            study = load_study(images / str(sid), f.tables.series[f.tables.series.study_id == sid])
        except SpinegradeError:
            continue  # listed among the header failures already
        coords = f.tables.coordinates[f.tables.coordinates.study_id == sid]
        targets = labelled_targets(study, coords, f.tables.labels)
        for name, panels in study_panels(study, targets).items():
            if panels:
                figures[f"labelled_{sid}_{name}"] = save_overlay(
                    panels,
                    out / f"labelled_{sid}_{name}.png",
                    f"study {sid}: {OVERLAY_TITLES[name]}",
                    legend=GRADES_LEGEND,
                )
    return figures


def _labelled_points_section(facts: dict[str, Any], figures: dict[str, Path]) -> str:
    drawn = sorted(k for k in figures if k.startswith("labelled_"))
    if not drawn:
        return html.note("No study has both images and labelled coordinates here.")
    body = html.p(
        "The radiologists' points where they were marked, on the real slices, coloured by the "
        f"study's grade (first {MAX_STUDIES_DRAWN} studies with images and coordinates). A hollow "
        "marker lies on another slice of the stack. Check here that points land on the anatomy "
        "they name and that left and right are where the geometry says."
    )
    return body + "".join(html.figure(figures[k], _labelled_caption(k)) for k in drawn)


def _labelled_caption(key: str) -> str:
    """`labelled_<study>_<overlay>` -> `study <study>: <the overlay's title>`."""
    _, study, name = key.split("_", 2)
    return f"study {study}: {OVERLAY_TITLES[name]}"


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
