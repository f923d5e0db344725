"""The smoke test's Markdown report: a verdict, the figures, then every check with its
prompt, expectation and answer (what an operator opens in the Vertex UI first).
Everything passes through ``logs.redact`` on the way out, and everything from the golden
file or the endpoint through ``markdown`` (literal text, never markup)."""

from __future__ import annotations

import json

from tune2serve.components import markdown as md
from tune2serve.components.smoke_test.smoke import SmokeResult, scrub


def _cell(text: str, limit: int = 160) -> str:
    """A table cell: shortened first (never in the middle of an escape), then escaped."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return md.text(text)


def render_markdown(result: SmokeResult) -> str:
    """Golden prompts, model answers, ids and URLs come from files and the endpoint: each
    is literal (``markdown.text`` inline, ``markdown.fenced`` for the request and answer)."""
    verdict = "PASSED" if result.passed else f"FAILED ({len(result.failures)} of {len(result.checks)} checks)"
    lines = [f"# Smoke test: {verdict}", "", f"Endpoint: {md.text(result.endpoint)}  ",
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
