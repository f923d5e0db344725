"""Markdown that carries text from the checkpoint or the endpoint as text, never markup.

Every Markdown report (validate, smoke-test, verify-traffic, finalize) is shown by the
Vertex AI Pipelines UI, which renders it. File and tensor names, config values, chat
templates, golden prompts, model answers, resource names and error messages come from
whoever made the checkpoint or answers on the endpoint; rendered raw, ``<img src=x
onerror=…>``, ``[x](javascript:…)``, ``![x](http://tracker/…)``, an unclosed ``<!--``
or a bare ``https://…`` would be live in an operator's browser. So every such value goes
through ``text`` (inline: paragraphs, list items, headings, table cells) or ``fenced``
(a literal block: JSON requests, answers), and the reports' own markup is the only
markup. The HTML reports (``report_html``) take every such value through ``html_text``:
the same redaction, then ``html.escape`` (quotes included, so it is safe in an attribute).

``text`` works for CommonMark, GFM and Python-Markdown alike:
- ``<``, ``>``, ``&`` become entities: no raw HTML, HTML comment or ``<autolink>``
  (an entity is text in every renderer, and a backslash before ``<`` is not);
- ``\\`` `````` ``*`` ``_`` ``~`` ``[`` ``]`` ``|`` ``#`` ``:`` ``@`` get a backslash: no
  link, image, reference definition, code span, emphasis, table cell break or heading;
  ``:`` and ``@`` (and the dot of ``www.``) break GFM's bare-URL and e-mail autolinks;
- line breaks and other control characters become spaces: a value stays on its line
  (no new block, no broken table row); at its start, leading spaces become entities and
  a list marker (``-``, ``+``, ``1.``, ``1)``) or underline (``=``) is escaped.
Secrets are redacted first (``logs.redact``: token shapes, URL credentials), while
they still have the shape the redaction knows.
"""

from __future__ import annotations

import html
import re

from tune2serve.components.logs import redact

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BACKSLASHED = re.compile(r"([\\`*_~\[\]|#:@])")
_WWW = re.compile(r"(?i)\b(www)\.")
# C0/C1 controls (tab and line breaks included) and Unicode line/paragraph separators.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BACKTICK_RUN = re.compile(r"`+")
_BLOCK_START = re.compile(r"^(\d{0,9})([-+=.)])(?=[\s=-]|$)")  # "- x", "+ x", "---", "===", "1. x", "1) x"


def text(value: object) -> str:
    """``value`` as literal inline Markdown text, on one line, secrets redacted."""
    s = _BREAKS.sub(" ", redact(str(value)))
    s = "".join(_ENTITIES.get(c, c) for c in s)
    s = _BACKSLASHED.sub(r"\\\1", s)
    s = _WWW.sub(r"\1\\.", s)
    # at the start of a line (a list item, a row) a value must not open a block: leading
    # spaces (an indented code block) become entities, a list marker or underline is escaped
    lead = len(s) - len(s.lstrip(" "))
    s = "&#32;" * lead + _BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), s[lead:], count=1)
    return s


def fenced(content: str, info: str = "") -> str:
    """``content`` as a literal fenced code block (its lines kept): the fence is longer
    than any run of backticks in it, so nothing in it can close the block early.
    ``info`` is the report's own language tag (``json``, ``text``), never input."""
    content = redact(content)
    longest = max((len(m.group(0)) for m in _BACKTICK_RUN.finditer(content)), default=0)
    fence = "`" * max(3, longest + 1)
    body = content.replace("\r\n", "\n").replace("\r", "\n")
    return f"{fence}{info}\n{body}\n{fence}"


# C0/C1 controls but tab and line feed: an HTML parser drops NUL and keeps the others as
# invisible noise, so a value shows the same in a <pre> block and in a cell.
_HTML_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def html_text(value: object) -> str:
    """``value`` as HTML text (element content or a quoted attribute value), secrets
    redacted first; line breaks kept as ``\\n`` (a ``<pre>`` shows them, a cell folds
    them), other control characters become spaces."""
    s = redact(str(value)).replace("\r\n", "\n").replace("\r", "\n")
    return html.escape(_HTML_CONTROLS.sub(" ", s), quote=True)


__all__ = ["fenced", "html_text", "text"]
