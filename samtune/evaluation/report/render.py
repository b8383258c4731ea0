"""A tiny document model rendered both as Markdown and as self-contained HTML.

Reports and comparisons build one list of blocks and write it twice, so the two files always
say the same thing.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Heading:
    """A section title (level 1-3)."""

    text: str
    level: int = 2


@dataclass
class Paragraph:
    """Plain text."""

    text: str


@dataclass
class Alert:
    """A loud line that must not be overlooked (random weights, skipped data)."""

    text: str


@dataclass
class Table:
    """A table; cells are formatted with :func:`fmt`."""

    header: list[str]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class Image:
    """A picture next to the report (a path relative to the report's folder)."""

    path: str
    alt: str


Block = Heading | Paragraph | Alert | Table | Image


def fmt(value: Any) -> str:
    """Format a table cell: floats with 4 decimals, None/NaN as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def to_markdown(blocks: list[Block]) -> str:
    """Render ``blocks`` as GitHub-flavoured Markdown."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Alert):
            out.append(f"> **WARNING: {b.text}**")
        elif isinstance(b, Table):
            cells = [[fmt(c).replace("|", "\\|") for c in row] for row in b.rows]
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "|".join("---" for _ in b.header) + "|")
            out.extend("| " + " | ".join(row) + " |" for row in cells)
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.path})")
        out.append("")
    return "\n".join(out)


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
    "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    ".warn{background:#b00020;color:#fff;font-weight:bold;padding:12px;font-size:1.2em}"
    "img{max-width:100%}"
)


def to_html(blocks: list[Block], *, title: str) -> str:
    """Render ``blocks`` as one self-contained HTML page (images linked relatively)."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        f'<html><head><meta charset="utf-8"><title>{e(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Alert):
            out.append(f'<p class="warn">WARNING: {e(b.text)}</p>')
        elif isinstance(b, Table):
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b.header) + "</tr>")
            for row in b.rows:
                out.append("<tr>" + "".join(f"<td>{e(fmt(c))}</td>" for c in row) + "</tr>")
            out.append("</table>")
        elif isinstance(b, Image):
            out.append(f'<p><img src="{e(b.path)}" alt="{e(b.alt)}"></p>')
    out.append("</body></html>")
    return "\n".join(out)
