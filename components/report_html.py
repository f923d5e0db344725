"""One look for every HTML report a person opens in the Vertex AI Pipelines UI (validate,
smoke-test, verify-traffic, the quality gate's diff): one stylesheet and one structure, so
the reports read as one product and an operator learns where to look once.

A page is, top to bottom: a **banner** with the verdict (green pass, red fail, amber
warn), **summary cards** (label over value), **sections** of paragraphs, tables, lists,
preformatted blocks, charts and nested sections, and **footnotes** (method, thresholds).

    page(title, Verdict(headline, tone, detail), [Card(label, value)],
         [Section(title, [Table(head, rows), "a paragraph", ...])], footnotes=[...]) -> str

Everything a report passes in is plain data, and every value is escaped here through
``markdown.html_text`` (secrets redacted, then ``html.escape``): a file name, an answer or
a resource name is text in the page, never markup. The only markup is this module's
own and ``Markup`` — SVG a report's chart code builds from values it escaped with ``esc``
(the chart helpers here). The page is self-contained: inline CSS, no script, no external
asset, nothing fetched.

Stable hooks for tests and scripts: the banner is ``header.banner`` (its id is the
verdict's ``id``, ``verdict`` by default), the cards are ``#summary .card``, a section's
``id`` is its element's id, and ``data`` mappings become ``data-*`` attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

from tune2serve.components.markdown import html_text as esc

Tone = Literal["pass", "fail", "warn", "info", ""]


class Markup(str):
    """Markup a report built itself from escaped values (an SVG chart): inserted as is.
    Never wrap a value from a checkpoint or an endpoint in it; pass the value instead."""


@dataclass(frozen=True)
class Verdict:
    """The banner: ``headline`` in large type, ``detail`` (the source, the endpoint) under it."""

    headline: str
    tone: Tone
    detail: str = ""
    id: str = "verdict"
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Card:
    """One summary figure: a short label over its value."""

    label: str
    value: object
    tone: Tone = ""


@dataclass(frozen=True)
class Code:
    """Monospace text: inline in a table cell, a ``<pre>`` block in a section."""

    text: str


@dataclass(frozen=True)
class Badge:
    """A short coloured status word in a cell (``error``, ``pass``)."""

    text: str
    tone: Tone


Cell = Union[str, int, float, Code, Badge, None]


@dataclass(frozen=True)
class Row:
    """A table row with a tone (a tinted row) or ``data-*`` attributes; a plain sequence
    of cells is a row too."""

    cells: Sequence[Cell]
    tone: Tone = ""
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    head: Sequence[str]
    rows: Sequence[Row | Sequence[Cell]]
    id: str = ""


@dataclass(frozen=True)
class Para:
    """A paragraph; ``tone`` colours it (a failure said in words)."""

    text: str
    tone: Tone = ""


@dataclass(frozen=True)
class Items:
    """A bulleted list of texts."""

    items: Sequence[str]


@dataclass(frozen=True)
class Section:
    """A titled part of the page; ``blocks`` may hold further sections (one heading level down)."""

    title: str
    blocks: Sequence[Block]
    id: str = ""
    data: Mapping[str, str] = field(default_factory=dict)


Block = Union[str, Para, Items, Code, Table, Markup, Section]

STYLESHEET = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1f2328;
line-height:1.45}
main.report{max-width:1100px;margin:0 auto;padding:24px}
.banner{padding:20px 24px;border-radius:10px;color:#fff;background:#57606a;font-size:1.5em;font-weight:600}
.banner.pass{background:#1a7f37}.banner.fail{background:#cf222e}.banner.warn{background:#9a6700}
.banner.info{background:#0969da}
.banner small{display:block;font-size:.55em;font-weight:400;opacity:.9;margin-top:4px;word-break:break-all}
h2{margin:28px 0 10px;font-size:1.15em}h3{margin:20px 0 8px;font-size:1.02em}h4{margin:16px 0 6px;font-size:.95em}
#summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px;margin-top:16px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 14px;border-left-width:4px}
.card.pass{border-left-color:#1a7f37}.card.fail{border-left-color:#cf222e}.card.warn{border-left-color:#9a6700}
.card.info{border-left-color:#0969da}
.card .label{font-size:.8em;color:#57606a;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:1.05em;margin-top:4px;word-break:break-word}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #d0d7de;margin:8px 0}
th,td{text-align:left;padding:8px 10px;border-bottom:1px solid #eaeef2;vertical-align:top;font-size:.92em;
word-break:break-word}
th{background:#f0f2f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.fail td{background:#fff5f5}tr.warn td{background:#fffbea}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
pre{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px;white-space:pre-wrap;
word-break:break-word}
.badge{font-weight:600;border-radius:12px;padding:2px 8px;font-size:.8em;white-space:nowrap;background:#eaeef2}
.badge.fail{background:#ffebe9;color:#cf222e}.badge.warn{background:#fff8c5;color:#9a6700}
.badge.info{background:#ddf4ff;color:#0969da}.badge.pass{background:#dafbe1;color:#1a7f37}
p.fail{color:#cf222e}p.warn{color:#9a6700}p.pass{color:#1a7f37}.none{color:#57606a}
footer{margin-top:32px;padding-top:12px;border-top:1px solid #d0d7de;color:#57606a;font-size:.85em}
svg.chart{background:#fff;border:1px solid #d0d7de;border-radius:8px;margin:8px 0;max-width:100%;height:auto}
svg.chart text{font-family:system-ui,sans-serif;font-size:11px;fill:#1f2328}
svg.chart .axis{stroke:#57606a;stroke-width:1}svg.chart .grid{stroke:#eaeef2;stroke-width:1}
svg.chart .tick{fill:#57606a}svg.chart .limit{stroke:#cf222e;stroke-dasharray:5 3;stroke-width:1.5}
svg.chart .serving{fill:#3182bd;stroke:#3182bd}svg.chart .serving.light{fill:#9ecae1;stroke:#9ecae1}
svg.chart .candidate{fill:#e8710a;stroke:#e8710a}svg.chart .candidate.light{fill:#fdc086;stroke:#fdc086}
svg.chart .other{fill:#8c959f;stroke:#8c959f}svg.chart polyline{fill:none!important;stroke-width:1.5}
svg.chart .expected{stroke:#1f2328;stroke-width:2}svg.chart .title{font-size:12px;font-weight:600}
svg.chart .thresholds,svg.chart .axis-title{fill:#57606a}
"""


def _attrs(element_id: str = "", classes: str = "", data: Mapping[str, str] | None = None) -> str:
    """id, class and data-* attributes; every value escaped (a ``data-code`` may come from input)."""
    out = f' id="{esc(element_id)}"' if element_id else ""
    out += f' class="{esc(classes.strip())}"' if classes.strip() else ""
    return out + "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in (data or {}).items())


def _cell(cell: Cell, tag: str = "td") -> str:
    if isinstance(cell, Code):
        return f"<{tag}><code>{esc(cell.text)}</code></{tag}>"
    if isinstance(cell, Badge):
        return f'<{tag}><span class="badge {cell.tone}">{esc(cell.text)}</span></{tag}>'
    if cell is None:
        return f'<{tag}><span class="none">—</span></{tag}>'
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return f'<{tag} class="num">{esc(cell)}</{tag}>'
    return f"<{tag}>{esc(cell)}</{tag}>"


def table(t: Table) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in t.head)
    rows = []
    for r in t.rows:
        row = r if isinstance(r, Row) else Row(r)
        rows.append(f"<tr{_attrs(classes=row.tone, data=row.data)}>{''.join(_cell(c) for c in row.cells)}</tr>")
    return f"<table{_attrs(t.id)}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def block(b: Block, level: int = 2) -> str:
    """One block as HTML; a nested section's heading is one level below its parent's."""
    if isinstance(b, Markup):
        return str(b)
    if isinstance(b, str):
        return f"<p>{esc(b)}</p>"
    if isinstance(b, Para):
        return f"<p{_attrs(classes=b.tone)}>{esc(b.text)}</p>"
    if isinstance(b, Items):
        return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Code):
        return f"<pre><code>{esc(b.text)}</code></pre>"
    if isinstance(b, Table):
        return table(b)
    h = f"h{min(level, 6)}"
    inner = "".join(block(x, level + 1) for x in b.blocks)
    return f"<section{_attrs(b.id, data=b.data)}><{h}>{esc(b.title)}</{h}>{inner}</section>"


def banner(v: Verdict) -> str:
    detail = f"<small>{esc(v.detail)}</small>" if v.detail else ""
    return f"<header{_attrs(v.id, 'banner ' + v.tone, v.data)}>{esc(v.headline)}{detail}</header>"


def cards(items: Sequence[Card]) -> str:
    return '<section id="summary" class="cards">' + "".join(
        f'<div{_attrs(classes="card " + c.tone)}><div class="label">{esc(c.label)}</div>'
        f'<div class="value">{esc(c.value)}</div></div>' for c in items) + "</section>"


def page(title: str, verdict: Verdict, summary: Sequence[Card], sections: Sequence[Section],
         footnotes: Sequence[str] = (), kind: str = "") -> str:
    """The whole report as one self-contained HTML page.

    Args:
        title: the browser tab's title (the step and its verdict).
        verdict: the banner.
        summary: the cards under the banner, in reading order.
        sections: the body, each with an ``<h2>`` title.
        footnotes: small print at the bottom (method, the thresholds that applied).
        kind: the report's name (``validate``, ``smoke-test``...) as ``data-report`` on ``<main>``.
    """
    notes = ("<footer id=\"footnotes\"><ol>" + "".join(f"<li>{esc(n)}</li>" for n in footnotes) + "</ol></footer>"
             if footnotes else "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLESHEET}</style></head><body>"
            f"<main{_attrs(classes='report', data={'report': kind} if kind else None)}>"
            f"{banner(verdict)}{cards(summary)}{''.join(block(s) for s in sections)}{notes}"
            "</main></body></html>\n")


__all__ = ["Badge", "Block", "Card", "Cell", "Code", "Items", "Markup", "Para", "Row", "STYLESHEET", "Section",
           "Table", "Tone", "Verdict", "esc", "page"]
