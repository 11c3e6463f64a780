"""Self-contained offline HTML pages: PNGs embedded as base64, DataFrames as tables, one template.

Generic on purpose (dataset inspection, prediction reports, ...): a page is a title plus a list of
:class:`Section`; every helper returns an HTML string, and :func:`write_page` writes it atomically.
Nothing is loaded from the network: the CSS is inline and images are `data:` URIs.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spinegrade.io import write_text

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --soft:#f6f8fa;
        --accent:#0969da; --warn-bg:#fff8c5; --warn-line:#d4a72c; --bad:#cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
header.page { border-bottom: 1px solid var(--line); margin-bottom: 8px; padding-bottom: 8px; }
header.page h1 { margin: 0 0 4px; font-size: 26px; }
header.page p { margin: 0; color: var(--muted); }
nav.toc { margin: 12px 0 8px; display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 13px; }
nav.toc a { color: var(--accent); text-decoration: none; }
section { margin-top: 28px; }
section h2 { font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table.df { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 12px;
           font-variant-numeric: tabular-nums; }
table.df th, table.df td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; }
table.df th { background: var(--soft); font-weight: 600; }
table.df td:first-child, table.df th:first-child, table.df .text { text-align: left; }
table.df ul { margin: 0; padding-left: 16px; }
table.df caption { caption-side: top; text-align: left; color: var(--muted); padding: 2px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 120px;
        background: var(--soft); }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { font-size: 12px; color: var(--muted); }
.note { border-left: 4px solid var(--warn-line); background: var(--warn-bg); padding: 8px 12px;
        margin: 10px 0; border-radius: 4px; }
.muted { color: var(--muted); }
.bad { color: var(--bad); font-weight: 600; }
figure { margin: 10px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12.5px; }
details { margin: 6px 0 10px; }
summary { cursor: pointer; color: var(--accent); }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; align-items: start; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


@dataclass
class Section:
    """One titled part of a page; `body` is HTML. `anchor` defaults to a slug of the title."""

    title: str
    body: str
    anchor: str = ""

    def __post_init__(self) -> None:
        if not self.anchor:
            self.anchor = "".join(ch if ch.isalnum() else "-" for ch in self.title.lower()).strip(
                "-"
            )


def esc(text: object) -> str:
    """HTML-escape any value's `str()`."""
    return html.escape(str(text))


def p(text: str, *, cls: str = "") -> str:
    """A paragraph of plain (escaped) text; `cls="note"` makes a highlighted callout."""
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def note(text: str) -> str:
    """A highlighted callout (e.g. "no images: this section is empty")."""
    return f'<div class="note">{esc(text)}</div>'


def h3(text: str) -> str:
    """A sub-heading inside a section."""
    return f"<h3>{esc(text)}</h3>"


def bullets(items: Iterable[object]) -> str:
    """An unordered list of escaped items."""
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def cards(facts: dict[str, object]) -> str:
    """Key figures as a row of boxes: `{"studies": 1975, "severe": "6.3%"}` (ints get commas)."""
    boxes = (
        f'<div class="card"><div class="v">{esc(_fmt(v))}</div><div class="k">{esc(k)}</div></div>'
        for k, v in facts.items()
    )
    return '<div class="cards">' + "".join(boxes) + "</div>"


def details(summary: str, body: str) -> str:
    """A collapsed block (long tables, example lists)."""
    return f"<details><summary>{esc(summary)}</summary>{body}</details>"


def img_tag(png: bytes | str | os.PathLike[str], *, alt: str = "", width: int | None = None) -> str:
    """An `<img>` whose source is the PNG itself (bytes or a file), base64 in a `data:` URI."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    size = f' width="{width}"' if width else ""
    return f'<img src="{src}" alt="{esc(alt)}"{size}>'


def figure(
    png: bytes | str | os.PathLike[str], caption: str = "", *, width: int | None = None
) -> str:
    """An embedded PNG with a caption under it."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{img_tag(png, alt=caption, width=width)}{cap}</figure>"


def table(
    df: pd.DataFrame,
    *,
    caption: str = "",
    index: bool = True,
    max_rows: int | None = 60,
    float_format: str = "{:,.3f}",
) -> str:
    """A DataFrame as an HTML table (escaped); longer frames are cut at `max_rows` with a note.

    An empty frame gives its caption and "(none)" instead of an empty grid.
    """
    if df.empty:
        return f'<p class="muted">{esc(caption)}{": " if caption else ""}(none)</p>'
    shown = df if max_rows is None or len(df) <= max_rows else df.head(max_rows)
    out = shown.to_html(
        classes="df",
        index=index,
        border=0,
        na_rep="",
        escape=True,
        float_format=lambda v: float_format.format(v),
    )
    if caption:
        out = out.replace(">", f"><caption>{esc(caption)}</caption>", 1)
    if shown is not df:
        out += p(f"(first {max_rows} of {len(df):,} rows)", cls="muted")
    return out


def page(title: str, sections: Sequence[Section], *, subtitle: str = "", footer: str = "") -> str:
    """A whole HTML document: header, table of contents, the sections, a footer."""
    toc = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections
    )
    sub = f"<p>{esc(subtitle)}</p>" if subtitle else ""
    foot = f"<footer>{esc(footer)}</footer>" if footer else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header class="page"><h1>{esc(title)}</h1>{sub}</header>'
        f'<nav class="toc">{toc}</nav>{body}{foot}</main></body></html>\n'
    )


def write_page(
    path: str | os.PathLike[str], title: str, sections: Sequence[Section], **kwargs: str
) -> Path:
    """Atomically write :func:`page` to `path`."""
    return write_text(path, page(title, sections, **kwargs))


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)
