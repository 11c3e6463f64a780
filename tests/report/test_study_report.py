"""Study report and batch index: the 5 x 5 grid, embedded overlays, flags, failed studies, links."""

from __future__ import annotations

import base64
import re

import pandas as pd

from spinegrade.constants import SEVERITIES, TARGETS
from spinegrade.report.figures import SEVERITY_COLORS
from spinegrade.report.study_report import severity_grid, write_index, write_study_report

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


def _record(status: str = "ok") -> dict:
    targets = []
    for cond, level in TARGETS:
        probs = (
            [0.1, 0.2, 0.7]
            if (cond, level) == ("spinal_canal_stenosis", "l4_l5")
            else [0.6, 0.3, 0.1]
        )
        flags = ["prior", "missing_series"] if "subarticular" in cond else []
        targets.append(
            {
                "condition": cond,
                "level": level,
                "probabilities": dict(zip(SEVERITIES, probs)),
                "most_likely": SEVERITIES[probs.index(max(probs))],
                "series_id": 7,
                "series_type": "Sagittal T2/STIR",
                "instance_number": 4,
                "pixel": {"x": 1.5, "y": 2.5},
                "world_lps_mm": [1.0, 2.0, 3.0],
                "confidence": 0.9,
                "spread_mm": 1.0,
                "reason": "no Axial T2 series" if flags else "",
                "flags": flags,
            }
        )
    return {
        "study_id": 123,
        "path": "/data/123",
        "status": status,
        "error": "" if status == "ok" else "no usable series",
        "model": {"run_dir": "/run", "folds": [0, 1]},
        "series": [
            {
                "series_id": 7,
                "series_type": "Sagittal T2/STIR",
                "description": "SAG T2",
                "stacks": 1,
                "slices": 15,
            }
        ],
        "skipped": [],
        "targets": targets,
    }


def test_severity_grid_has_one_coloured_cell_per_target() -> None:
    html = severity_grid(_record()["targets"])
    cells = re.findall(
        r'<td style="background:(#[0-9a-f]{6})[0-9a-f]{2};[^"]*"[^>]*>(.*?)</td>', html
    )
    assert len(cells) == 25
    assert sum(colour == SEVERITY_COLORS[2] for colour, _ in cells) == 1
    severe = next(body for colour, body in cells if colour == SEVERITY_COLORS[2])
    assert "Severe 70%" in severe and "N 0.10 · M 0.20 · S 0.70" in severe
    assert sum("prior, missing_series" in body for _, body in cells) == 10
    assert html.index("Spinal Canal Stenosis") < html.index("Right Subarticular Stenosis")


def test_study_report_embeds_overlays_and_lists_flags(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_study_report(tmp_path / "r" / "report.html", _record(), {"sagittal_t2": PNG})
    html = path.read_text()
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in html
    assert "Subarticular recesses (Axial T2)" in html  # named in the note about the missing overlay
    assert html.count("no Axial T2 series") >= 10 and "Study 123" in html
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")


def test_failed_study_report_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    html = write_study_report(tmp_path / "report.html", _record("failed"), {}).read_text()
    assert "could not be read: no usable series" in html and "Overlays" not in html


def test_index_links_every_study_and_lists_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    errors = pd.DataFrame({"study_id": [456], "path": ["/data/456"], "reason": ["empty folder"]})
    other = dict(_record("failed"), study_id=456)
    html = write_index(
        tmp_path / "index.html", [_record(), other], errors, {"studies": 2}
    ).read_text()
    assert 'href="studies/123/report.html"' in html and 'href="studies/456/report.html"' in html
    assert "empty folder" in html and "L4/L5 spinal: severe (10 targets from the prior)" in html
    assert "not read: prior everywhere" in html
