"""Markdown reports carry input as text: hostile strings (raw HTML, links, images, HTML
comments, autolinks, backticks, pipes, line breaks) as file names, config values, golden
prompts, answers and endpoint data go through every Markdown report (validate,
smoke-test, verify-traffic, finalize), which is rendered by a CommonMark renderer with
raw HTML and tables on (markdown-it-py, the worst case of what the UI may do): the page
holds only the report's own markup — no tag, link, image or comment from the input."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from tune2serve.components import markdown as md

HOSTILE = [
    '<img src=x onerror="alert(1)">', "<script>alert(1)</script>", "](javascript:alert(1))",
    "[click](javascript:alert(1))", "![x](http://tracker.example/p.png)", "![x][r]\n\n[r]: http://t.example/a.png",
    "<!--", "<!-- hidden -->", "-->", "<http://evil.example>", "<a@b.example>", "https://evil.example/x",
    "www.evil.example", "x@evil.example", "`code` ``", "```", "a | b || c", "line\nbreak", "\r\n# heading",
    "\n\n<div onmouseover=alert(1)>", "&lt;img src=x&gt;", "&#60;img&#62;", "\\<img src=x>", "\\[x](http://e.x)",
    "*emph* _u_ ~~s~~", "<details open ontoggle=alert(1)>", "[x]: http://ref.example", "> quote", "- item",
    "1. one", "    indented", "\u2028<img src=x>", "\x00\x1b[31m", "javascript:alert(1)",
]
_PIECE = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12))
HOSTILE_TEXT = st.lists(_PIECE, min_size=1, max_size=4).map("".join)

# What each report's own markup renders to: anything else came from the input.
ALLOWED_TAGS = {"h1", "h2", "h3", "p", "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "strong", "pre",
                "code", "br", "hr"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.comments: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def handle_decl(self, decl: str) -> None:
        self.other.append(decl)

    def handle_pi(self, data: str) -> None:
        self.other.append(data)

    def unknown_decl(self, data: str) -> None:
        self.other.append(data)


RENDERER = MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")
RENDERER.validateLink = lambda url: True  # type: ignore[method-assign]  # a renderer that allows javascript: too


def assert_inert(markdown_text: str) -> None:
    """Rendered, the Markdown holds only the report's own tags, no attribute but a code
    block's language class, no comment; and no GFM autolink could start in it (a bare
    scheme, www. or e-mail address)."""
    page = RENDERER.render(markdown_text)
    parsed = _Tags()
    parsed.feed(page)
    parsed.close()
    for tag, attrs in parsed.tags:
        assert tag in ALLOWED_TAGS, (tag, page)
        assert all(name == "class" and (value or "").startswith("language-") for name, value in attrs), (tag, attrs)
    assert parsed.comments == [] and parsed.other == [] and "<!--" not in page, page
    # and structurally: outside fenced blocks, no unescaped bracket, angle bracket or backtick
    unescaped = re.sub(r"\\.", "", _outside_fences(markdown_text))
    assert not re.search(r"[\[\]<>`]", unescaped), markdown_text
    # GFM's extended autolinks (linkify) need an unescaped "scheme:", "www." or "@"
    assert not re.search(r"(?<!\\)(?:[A-Za-z][A-Za-z0-9+.-]*(?<!\\):(?=//)|\bwww\.|[A-Za-z0-9]@[A-Za-z0-9])",
                         _outside_fences(markdown_text)), markdown_text


def _outside_fences(text: str) -> str:
    """The Markdown without its fenced blocks (literal there: never linked)."""
    out, fence = [], None
    for line in text.split("\n"):
        m = re.match(r"^(`{3,})", line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if line.startswith(fence) and line.strip("`") == "":
                fence = None
            continue
        out.append(line)
    return "\n".join(out)


# ---- the escaping functions ------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(HOSTILE_TEXT)
def test_text_is_literal_in_a_paragraph_a_list_a_heading_and_a_table(value: str) -> None:
    escaped = md.text(value)
    assert "\n" not in escaped and "\r" not in escaped
    assert_inert(f"para {escaped} end\n\n- {escaped}\n\n### {escaped}\n\n| a | b |\n|---|---|\n| {escaped} | x |\n")
    # the table keeps its two cells whatever the value holds
    rows = re.findall(r"<tr>(.*?)</tr>", RENDERER.render(f"| a | b |\n|---|---|\n| {escaped} | x |\n"), re.S)
    assert [r.count("<td") for r in rows[1:]] == [2]


@settings(max_examples=200, deadline=None)
@given(HOSTILE_TEXT)
def test_text_shows_the_value_itself(value: str) -> None:
    """Escaping loses nothing a reader needs: rendered, the text is the value (line
    breaks and control characters as spaces, anything secret-shaped redacted)."""
    from tune2serve.components.logs import redact

    page = RENDERER.render(md.text(value))
    shown = HTMLParserText.text_of(page)
    expected = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", redact(value))
    assert " ".join(shown.split()) == " ".join(expected.split())


class HTMLParserText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    @classmethod
    def text_of(cls, page: str) -> str:
        parser = cls()
        parser.feed(page)
        parser.close()
        return "".join(parser.parts)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_PIECE, st.sampled_from(["```", "````", "~~~", "\n```\n<img src=x>\n"])), max_size=6)
       .map("".join))
def test_fenced_blocks_cannot_be_closed_from_inside(content: str) -> None:
    block = md.fenced(content, "text")
    page = RENDERER.render(f"{block}\n\nafter\n")
    parsed = _Tags()
    parsed.feed(page)
    assert [t for t, _ in parsed.tags] == ["pre", "code", "p"], page
    assert page.endswith("<p>after</p>\n")


# ---- every Markdown report --------------------------------------------------------------------

def _validate_report(value: str) -> str:
    from tune2serve.components.validate.findings import Report, error, info, warning
    from tune2serve.components.validate.report import render_markdown

    report = Report(source=f"gs://b/{value}", findings=[
        error("shape-mismatch", f"{value}: tensor {value} has shape [2, 3]", value),
        warning("python-files", f"{value}.py is code", f"sub/{value}.py"), info("memory-fits", value)],
        summary={"family": value, "model_type": value, "matched_model": value, "parameters": 12,
                 "weight_bytes": 10, "shards": 1, "weight_format": value, "tensors": 2})
    return render_markdown(report)


def _smoke_report(value: str) -> str:
    from tune2serve.components.smoke_test.dataplane import Exchange
    from tune2serve.components.smoke_test.report import render_markdown
    from tune2serve.components.smoke_test.smoke import Check, SmokeResult

    ex = Exchange("chat", f"https://h/{value}", {}, 200, answer=value, latency_s=0.1, deployed_model_id=value)
    checks = [Check(value, "chat", False, f"expected {value!r}, got {value}", {"messages": [{"content": value}]},
                    f"https://h/{value}", answer=value, exchange=ex),
              Check("ok", "predict", True, "", {"prompt": value}, "https://h/p", answer=value + "```\n<img src=x>")]
    return render_markdown(SmokeResult(f"projects/p/locations/l/endpoints/{value}", [value, "2"], checks,
                                       {"ttft_p50_s": 0.1}))


def _verify_report(value: str) -> str:
    from tests.verify_traffic.simulate import NEW, OLD, endpoint_state, routed
    from tune2serve.components.verify_traffic.checks import Policy, judge_step
    from tune2serve.components.verify_traffic.report import markdown
    from tune2serve.components.verify_traffic.verify import VerifyResult

    split = {OLD: 90, NEW: 10}
    step = judge_step(10, NEW, split, endpoint_state(split), routed(200, 0.10, 1), Policy())
    step = replace(step, failures=(*step.failures, value), models={**step.models, value: step.canary})
    result = VerifyResult("rolled_back", f"projects/p/locations/l/endpoints/{value}", value, {value: 100, OLD: 0},
                          [step], reason=value, notes=[value, f"note {value}"],
                          rollback={"restored_split": {value: 100}, "undeployed": [value]})
    return markdown(result)


def _finalize_report(value: str) -> str:
    from tune2serve.components.verify_traffic.finalize import FinalizeResult

    return FinalizeResult("FAILED", actions=[value, f"deleted {value}"], problems=[f"{value}: 403"]).markdown()


REPORTS = [_validate_report, _smoke_report, _verify_report, _finalize_report]


@settings(max_examples=60, deadline=None)
@given(HOSTILE_TEXT, st.sampled_from(REPORTS))
def test_every_markdown_report_keeps_input_inert(value: str, report: Any) -> None:
    assert_inert(report(value))


def test_the_reports_own_markup_still_renders() -> None:
    """The check above is not vacuous: the reports do render tables, headings, lists and
    blocks, and a raw value would have been live."""
    page = RENDERER.render(_smoke_report('<img src=x onerror="alert(1)">'))
    assert "<table>" in page and "<h3>" in page and "<pre><code" in page and "&lt;img" in page
    assert "<img" not in page
    assert "<img" in RENDERER.render('<img src=x onerror="alert(1)">')  # what the renderer does with raw input
    page = RENDERER.render(_verify_report("[x](javascript:alert(1))"))
    assert "<ul>" in page and "<a " not in page
    assert "<a " in RENDERER.render("[x](http://e.example)")
