"""Per-study `report.html` and the batch's `index.html`, from the records of `predictions.json`.

A record is the dict written to `studies/<id>/predictions.json` (see
`spinegrade.inference.outputs.prediction_record`): `study_id`, `status`, `series`, `targets` (25
entries with `condition`, `level`, `probabilities`, `most_likely`, where the model looked, `flags`).
Pages are self-contained and offline (`spinegrade.report.html`: inline CSS, PNGs as data URIs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from spinegrade.constants import (
    CONDITION_LABELS,
    CONDITIONS,
    LEVEL_LABELS,
    LEVELS,
    SEVERITIES,
    SEVERITY_LABELS,
)
from spinegrade.report.figures import SEVERITY_COLORS
from spinegrade.report.html import (
    Section,
    bullets,
    cards,
    esc,
    figure,
    img_tag,
    note,
    table,
    write_page,
)
from spinegrade.report.overlays import OVERLAY_TITLES

GRID_CSS = """
table.grid { border-collapse: separate; border-spacing: 3px; font-size: 12.5px; margin: 8px 0 4px; }
table.grid th { font-weight: 600; padding: 4px 8px; text-align: left; color: var(--muted); }
table.grid td { padding: 5px 8px; border-radius: 6px; min-width: 128px; vertical-align: top;
                font-variant-numeric: tabular-nums; }
table.grid td .sev { font-weight: 700; }
table.grid td .p { font-size: 11.5px; }
table.grid td .f { font-size: 11px; font-style: italic; }
table.cams td { padding: 4px 6px; vertical-align: top; font-size: 11.5px; color: var(--muted); }
table.cams td img { display: block; border: 1px solid var(--line); border-radius: 3px; }
.legend span.sw { display: inline-block; padding: 1px 8px; margin-right: 6px; border-radius: 4px;
               color: #fff; font-size: 12px; }
"""
_SHORT = {"normal_mild": "N", "moderate": "M", "severe": "S"}


def severity_grid(targets: Sequence[Mapping[str, Any]]) -> str:
    """The 5 x 5 table (conditions x levels): most likely severity, the 3 probabilities, flags.

    A cell's colour is its most likely severity, the stronger the more probable.
    """
    rows = _grid_rows(targets, lambda t: _cell(t) if t is not None else "<td></td>")
    legend = (
        '<p class="legend">'
        + "".join(
            f'<span class="sw" style="background:{c}">{esc(SEVERITY_LABELS[s])}</span>'
            for s, c in zip(SEVERITIES, SEVERITY_COLORS)
        )
        + ' <span class="muted">N / M / S = probability of normal-mild / moderate / severe'
        + "</span></p>"
    )
    return f'<style>{GRID_CSS}</style><table class="grid">{rows}</table>{legend}'


def _grid_rows(
    targets: Sequence[Mapping[str, Any]], cell: Callable[[Mapping[str, Any] | None], str]
) -> str:
    """The header and 5 rows (conditions x levels) of a target grid; `cell(target or None)`
    gives each `<td>`."""
    by_key = {(t["condition"], t["level"]): t for t in targets}
    head = "<tr><th></th>" + "".join(f"<th>{esc(LEVEL_LABELS[lv])}</th>" for lv in LEVELS) + "</tr>"
    body = [
        f"<tr><th>{esc(CONDITION_LABELS[cond])}</th>"
        + "".join(cell(by_key.get((cond, lv))) for lv in LEVELS)
        + "</tr>"
        for cond in CONDITIONS
    ]
    return head + "".join(body)


def _cell(t: Mapping[str, Any]) -> str:
    probs = [float(t["probabilities"][s]) for s in SEVERITIES]
    k = max(range(len(probs)), key=probs.__getitem__)
    colour = SEVERITY_COLORS[k]
    alpha = int(40 + 160 * max(0.0, (probs[k] - 1 / 3) * 1.5))  # 1/3 -> faint, 1 -> strong
    style = f"background:{colour}{min(alpha, 255):02x}; border-left:5px solid {colour}"
    ps = " · ".join(f"{_SHORT[s]} {p:.2f}" for s, p in zip(SEVERITIES, probs))
    flags = t.get("flags") or []
    flag_html = f'<div class="f">⚑ {esc(", ".join(flags))}</div>' if flags else ""
    return (
        f'<td style="{style}" title="{esc(t.get("reason") or "")}">'
        f'<div class="sev">{esc(SEVERITY_LABELS[SEVERITIES[k]])}'
        f' {probs[k]:.0%}</div><div class="p">{esc(ps)}</div>{flag_html}</td>'
    )


def cam_grid(
    targets: Sequence[Mapping[str, Any]], cams: Mapping[str, bytes | str | os.PathLike[str]]
) -> str:
    """The 5 x 5 table (conditions x levels) of each target's Grad-CAM PNG (`cams`: row_id ->
    PNG), captioned with the severity it explains and how far the map's peak lies from the
    point; a target without a map gets an empty cell."""

    def cell(t: Mapping[str, Any] | None) -> str:
        png = cams.get(t["row_id"]) if t is not None else None
        if t is None or png is None:
            return "<td></td>"
        label = SEVERITY_LABELS[t["most_likely"]]
        peak = t.get("cam_peak_mm")
        caption = label + ("" if peak is None else f" · peak {float(peak):.1f} mm off")
        where = f"{CONDITION_LABELS[t['condition']]} {LEVEL_LABELS[t['level']]}"
        alt = f"{where}: crop and Grad-CAM of {label}"
        return f"<td>{img_tag(png, alt=alt)}{esc(caption)}</td>"

    explain = (
        '<p class="muted">Each target: its crop (centre slice, the graded point at the cross) and, '
        "beside it, the Grad-CAM map of the most likely severity over it (red: the regions that "
        "raised that severity most; averaged over the folds).</p>"
    )
    return f'{explain}<table class="grid cams">{_grid_rows(targets, cell)}</table>'


def study_report_html_sections(
    record: Mapping[str, Any],
    overlays: Mapping[str, bytes | str | os.PathLike[str]],
    cams: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
) -> list[Section]:
    """The sections of one study's report: findings grid, Grad-CAM maps (given `cams`: row_id ->
    PNG), overlays, where it looked, series, flags."""
    targets = record.get("targets", [])
    sections = [Section("Findings", _summary_cards(record) + severity_grid(targets))]
    if cams and record.get("status") == "ok":
        sections.append(Section("Grad-CAM maps", cam_grid(targets, cams)))
    if record.get("status") != "ok":
        sections[0].body = (
            note(
                f"This study could not be read: {record.get('error')}. Every target "
                "holds the trained class prior."
            )
            + sections[0].body
        )
    pics = "".join(figure(png, OVERLAY_TITLES.get(name, name)) for name, png in overlays.items())
    missing = [OVERLAY_TITLES[n] for n in OVERLAY_TITLES if n not in overlays]
    if missing and record.get("status") == "ok":
        pics += note(
            "No image for: " + "; ".join(missing) + " (series missing or nothing located)."
        )
    if record.get("status") == "ok":
        sections.append(Section("Overlays", pics))
        sections.append(
            Section(
                "Where the model looked", table(_where_table(targets), index=False, max_rows=None)
            )
        )
        sections.append(Section("Series", _series_html(record)))
    flagged = [t for t in targets if t.get("flags")]
    sections.append(
        Section(
            "Flags",
            table(
                pd.DataFrame(
                    [
                        {
                            "condition": CONDITION_LABELS[t["condition"]],
                            "level": LEVEL_LABELS[t["level"]],
                            "flags": ", ".join(t["flags"]),
                            "reason": t.get("reason") or "",
                        }
                        for t in flagged
                    ]
                ),
                index=False,
                max_rows=None,
            )
            if flagged
            else "<p>No flags: every target was located and graded by the models.</p>",
        )
    )
    return sections


def write_study_report(
    path: str | Path,
    record: Mapping[str, Any],
    overlays: Mapping[str, bytes | str | os.PathLike[str]],
    cams: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
) -> Path:
    """Write one study's self-contained `report.html` atomically; `overlays` name -> PNG, `cams`
    row_id -> Grad-CAM PNG."""
    model = record.get("model", {})
    subtitle = (
        f"{record.get('path', '')} · run {model.get('run_dir', '?')} · "
        f"folds {model.get('folds', '?')}"
        f"{' · flip TTA' if model.get('tta') else ''}"
    )
    return write_page(
        path,
        f"Study {record['study_id']}",
        study_report_html_sections(record, overlays, cams),
        subtitle=subtitle,
        footer="spinegrade · research software, not a medical device",
    )


def write_index(
    path: str | Path,
    records: Sequence[Mapping[str, Any]],
    errors: pd.DataFrame,
    facts: Mapping[str, Any],
) -> Path:
    """Write the batch's `index.html`: key figures, one row per study (linked), the errors."""
    rows = [_index_row(r) for r in records]
    links = "".join(
        f'<tr><td><a href="studies/{r["study_id"]}/report.html">{r["study_id"]}</a></td>'
        f'<td>{esc(r["status"])}</td><td style="text-align:left">{esc(row["findings"])}</td>'
        f"<td>{_fmt_p(row['any_severe'])}</td>"
        f"<td>{row['flags']}</td></tr>"
        for r, row in zip(records, rows)
    )
    studies = (
        '<table class="df"><tr><th>study</th><th>status</th><th>moderate / severe findings</th>'
        f"<th>P(any severe spinal)</th><th>flagged targets</th></tr>{links}</table>"
    )
    sections = [Section("Batch", cards(dict(facts))), Section("Studies", studies)]
    sections.append(
        Section(
            "Errors",
            table(errors, index=False, max_rows=None)
            if len(errors)
            else "<p>Every study was read.</p>",
        )
    )
    return write_page(
        path,
        "spinegrade predictions",
        sections,
        footer="spinegrade · research software, not a medical device",
    )


def _index_row(record: Mapping[str, Any]) -> dict[str, Any]:
    targets = record.get("targets", [])
    graded = [t for t in targets if "prior" not in (t.get("flags") or [])]
    found = [
        f"{LEVEL_LABELS[t['level']]} {_short(t['condition'])}: "
        f"{SEVERITY_LABELS[t['most_likely']].lower()}"
        for t in graded
        if t["most_likely"] != SEVERITIES[0]
    ]
    spinal = [
        float(t["probabilities"]["severe"]) for t in graded if t["condition"] == CONDITIONS[0]
    ]
    if record.get("status") != "ok":
        text = "not read: prior everywhere"
    else:
        text = "; ".join(found) or "none"
        if len(graded) < len(targets):
            text += f" ({len(targets) - len(graded)} targets from the prior)"
    return {
        "findings": text,
        "any_severe": max(spinal) if spinal else float("nan"),
        "flags": sum(1 for t in targets if t.get("flags")),
    }


def _short(condition: str) -> str:
    """'Left Neural Foraminal Narrowing' -> 'left foraminal' (for compact lists)."""
    drop = {"canal", "stenosis", "neural", "narrowing"}
    return " ".join(w for w in CONDITION_LABELS[condition].lower().split() if w not in drop)


def _summary_cards(record: Mapping[str, Any]) -> str:
    targets = record.get("targets", [])
    graded = sum(1 for t in targets if "prior" not in (t.get("flags") or []))
    spinal = [
        float(t["probabilities"]["severe"]) for t in targets if t["condition"] == CONDITIONS[0]
    ]
    return cards(
        {
            "targets graded by the model": f"{graded} / {len(targets)}",
            "P(any severe spinal)": f"{max(spinal):.2f}" if spinal else "-",
            "series": len(record.get("series", [])),
            "flagged targets": sum(1 for t in targets if t.get("flags")),
        }
    )


def _where_table(targets: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for t in targets:
        world, pixel = t.get("world_lps_mm"), t.get("pixel") or {}
        rows.append(
            {
                "condition": CONDITION_LABELS[t["condition"]],
                "level": LEVEL_LABELS[t["level"]],
                "series": t.get("series_id"),
                "type": t.get("series_type") or "",
                "instance": t.get("instance_number"),
                "x (col)": _num(pixel.get("x")),
                "y (row)": _num(pixel.get("y")),
                "world LPS mm": ""
                if not world
                else "(" + ", ".join(f"{v:.1f}" for v in world) + ")",
                "confidence": _num(t.get("confidence")),
                "fold spread mm": _num(t.get("spread_mm")),
            }
        )
    return pd.DataFrame(rows)


def _series_html(record: Mapping[str, Any]) -> str:
    series = pd.DataFrame(record.get("series", []))
    out = table(series, index=False, max_rows=None) if len(series) else "<p>No series.</p>"
    if record.get("skipped"):
        out += note("Series that could not be read:") + bullets(record["skipped"])
    return out


def _fmt_p(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # NaN: nothing graded


def _num(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)
