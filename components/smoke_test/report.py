"""The smoke test's reports, Markdown and HTML: a verdict, the figures, then every check
with its prompt, expectation and answer (what an operator opens in the Vertex UI first).
Everything passes through ``logs.redact`` on the way out, and everything from the golden
file or the endpoint through ``markdown`` (literal text, never markup) or, in the HTML
page (the reports' one look, ``report_html``), its escaping."""

from __future__ import annotations

import json

from pathlib import Path

from tune2serve.components import markdown as md
from tune2serve.components.report_html import Badge, Block, Card, Code, Para, Row, Section, Table, Verdict, page
from tune2serve.components.smoke_test.smoke import Check, SmokeResult, scrub


def _cell(text: str, limit: int = 160) -> str:
    """A table cell: shortened first (never in the middle of an escape), then escaped."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return md.text(text)


def verdict(result: SmokeResult) -> str:
    return "PASSED" if result.passed else f"FAILED ({len(result.failures)} of {len(result.checks)} checks)"


def render_markdown(result: SmokeResult) -> str:
    """Golden prompts, model answers, ids and URLs come from files and the endpoint: each
    is literal (``markdown.text`` inline, ``markdown.fenced`` for the request and answer)."""
    lines = [f"# Smoke test: {verdict(result)}", "", f"Endpoint: {md.text(result.endpoint)}  ",
             f"Deployed models: {', '.join(md.text(d) for d in result.deployed_model_ids)}", "",
             "## Figures", "", "| metric | value |", "|---|---|"]
    lines += [f"| {md.text(k)} | {md.text(v)} |" for k, v in result.metrics.items()]
    lines += ["", "## Checks", "", "| # | check | request kind | result | latency (s) | answered by |",
              "|---|---|---|---|---|---|"]
    for i, c in enumerate(result.checks, 1):
        ex = c.exchange
        lines.append(f"| {i} | {_cell(c.name)} | {md.text(c.kind)} | {'pass' if c.passed else 'FAIL: ' + _cell(c.detail)} | "
                     f"{f'{ex.latency_s:.3f}' if ex else '-'} | {md.text(ex.deployed_model_id) if ex else '-'} |")
    lines += ["", "## Prompts and answers", ""]
    for i, c in enumerate(result.checks, 1):
        lines += [f"### {i}. {md.text(c.name)} — {'pass' if c.passed else 'FAIL'}", "", f"POST {md.text(c.url)}", "",
                  md.fenced(json.dumps(c.request, indent=2, ensure_ascii=False), "json"), "",
                  "Answer:", "", md.fenced(c.answer or "(none)", "text"), ""]
        if not c.passed:
            lines += [f"**Problem:** {md.text(c.detail)}", ""]
    return str(scrub("\n".join(lines)))


# The figures worth a card, in reading order, with how each is shown.
_CARDS = (("checks_passed", "Checks passed", "{:.0f}"), ("latency_p50_s", "Latency p50", "{:.3f} s"),
          ("latency_p95_s", "Latency p95", "{:.3f} s"), ("time_to_first_token_p50_s", "Time to first token p50",
                                                          "{:.3f} s"),
          ("tokens_per_s", "Tokens per second", "{:.1f}"), ("errors", "Request errors", "{:.0f}"))


def _cards(result: SmokeResult) -> list[Card]:
    m = result.metrics
    cards = [Card("Verdict", verdict(result), "pass" if result.passed else "fail"), Card("Endpoint", result.endpoint),
             Card("Deployed models", ", ".join(result.deployed_model_ids) or "none")]
    for key, label, shown in _CARDS:
        if key in m:
            value = f"{shown.format(m[key])} of {len(result.checks)}" if key == "checks_passed" else shown.format(m[key])
            cards.append(Card(label, value, "fail" if key == "errors" and m[key] else ""))
    return cards


def _check_section(i: int, c: Check) -> Section:
    """One check: where it was sent, the request and the answer as literal blocks, the problem."""
    blocks: list[Block] = [Para(f"POST {c.url}"), Code(json.dumps(c.request, indent=2, ensure_ascii=False)),
                           "Answer:", Code(c.answer or "(none)")]
    if not c.passed:
        blocks.append(Para(f"Problem: {c.detail}", "fail"))
    return Section(f"{i}. {c.name} — {'pass' if c.passed else 'FAIL'}", blocks, id=f"check-{i}",
                   data={"passed": str(c.passed).lower()})


def render_html(result: SmokeResult) -> str:
    """The HTML page: banner (``#verdict``, ``data-ok``), figure cards (``#summary``), the
    checks table (``#checks``, a row per check with ``data-kind``), then each check's
    request and answer (``#check-N``). Prompts, answers, ids and URLs are values:
    ``report_html`` escapes them (secrets redacted)."""
    rows = [Row((i, c.name, Code(c.kind), Badge("pass", "pass") if c.passed else Badge("FAIL", "fail"),
                 c.detail, f"{c.exchange.latency_s:.3f}" if c.exchange else None,
                 Code(c.exchange.deployed_model_id) if c.exchange and c.exchange.deployed_model_id else None),
                tone="" if c.passed else "fail", data={"kind": c.kind})
            for i, c in enumerate(result.checks, 1)]
    sections = [Section("Checks", [Table(("#", "check", "request kind", "result", "detail", "latency (s)",
                                          "answered by"), rows)] if rows else ["No check ran."], id="checks"),
                Section("Prompts and answers", [_check_section(i, c) for i, c in enumerate(result.checks, 1)]
                        or ["No check ran."], id="exchanges")]
    banner = Verdict(f"Smoke test: {verdict(result)}", "pass" if result.passed else "fail", detail=result.endpoint,
                     data={"ok": str(result.passed).lower()})
    return page(f"Smoke test: {verdict(result)} — {result.endpoint}", banner, _cards(result), sections,
                footnotes=["Each golden prompt as a chat completion (the first after warm-up, then again for "
                           "determinism at temperature 0), and the first prompt streamed, by :predict and by "
                           ":streamRawPredict: every request kind of a custom-weights endpoint, sent to its dedicated "
                           "data plane. Latency figures are over every request sent."], kind="smoke-test")


def write_reports(result: SmokeResult, markdown_path: str | Path, html_path: str | Path | None = None) -> None:
    """The Markdown report, and the HTML page beside it when ``html_path`` is given."""
    Path(markdown_path).write_text(render_markdown(result), encoding="utf-8")
    if html_path is not None:
        Path(html_path).write_text(render_html(result), encoding="utf-8")
