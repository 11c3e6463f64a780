"""Offline HTML helpers: embedded PNGs, escaped tables, the page template, atomic writing."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd

from spinegrade.report import html
from spinegrade.report.figures import new_figure, png_bytes, save_png


def _png() -> bytes:
    fig, axes = new_figure(1, 1)
    axes[0, 0].plot([0, 1], [1, 0])
    return png_bytes(fig)


def test_img_tag_embeds_the_exact_png_bytes(tmp_path: Path) -> None:
    fig, axes = new_figure(1, 1)
    axes[0, 0].plot([0, 1])
    path = save_png(fig, tmp_path / "f.png")
    tag = html.img_tag(path, alt="a <b>", width=120)
    data = re.search(r'src="data:image/png;base64,([^"]+)"', tag).group(1)
    assert base64.b64decode(data) == path.read_bytes()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'alt="a &lt;b&gt;"' in tag and 'width="120"' in tag
    assert not list(tmp_path.glob(".*tmp*"))  # atomic save leaves no temporary file


def test_table_escapes_cuts_long_frames_and_formats_floats() -> None:
    df = pd.DataFrame({"name": ["<script>", "b", "c"], "v": [0.12345, 1.5, 2.0]})
    out = html.table(df, caption="Cap & co", index=False, max_rows=2, float_format="{:.2f}")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "0.12" in out and "0.123" not in out
    assert "(first 2 of 3 rows)" in out and ">c<" not in out
    assert "<caption>Cap &amp; co</caption>" in out
    assert html.table(df.iloc[:0], caption="Empty") == '<p class="muted">Empty: (none)</p>'


def test_page_has_toc_sections_and_no_external_resources(tmp_path: Path) -> None:
    sections = [
        html.Section("Overview & facts", html.cards({"studies": 1975, "severe": "6.3%"})),
        html.Section("Figure", html.figure(_png(), "a caption")),
    ]
    path = html.write_page(tmp_path / "r.html", "Title <x>", sections, subtitle="sub")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>Title &lt;x&gt;</title>" in page
    assert '<a href="#overview---facts">' in page and 'id="overview---facts"' in page
    assert "1,975" in page and "6.3%" in page and "a caption" in page
    assert page.count("data:image/png;base64,") == 1
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
