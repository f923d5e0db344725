"""The smoke test's Markdown report: a verdict, the figures, then every check with its
prompt, expectation and answer (what an operator opens in the Vertex UI first).
Everything passes through ``logs.redact`` on the way out."""

from __future__ import annotations

import json

from tune2serve.components.smoke_test.smoke import SmokeResult, scrub


def _cell(text: str, limit: int = 160) -> str:
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_markdown(result: SmokeResult) -> str:
    verdict = "PASSED" if result.passed else f"FAILED ({len(result.failures)} of {len(result.checks)} checks)"
    lines = [f"# Smoke test: {verdict}", "", f"Endpoint: `{result.endpoint}`  ",
             f"Deployed models: {', '.join(f'`{d}`' for d in result.deployed_model_ids)}", "",
             "## Figures", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.metrics.items()]
    lines += ["", "## Checks", "", "| # | check | request kind | result | latency (s) | answered by |",
              "|---|---|---|---|---|---|"]
    for i, c in enumerate(result.checks, 1):
        ex = c.exchange
        lines.append(f"| {i} | {_cell(c.name)} | {c.kind} | {'pass' if c.passed else 'FAIL: ' + _cell(c.detail)} | "
                     f"{f'{ex.latency_s:.3f}' if ex else '-'} | {ex.deployed_model_id if ex else '-'} |")
    lines += ["", "## Prompts and answers", ""]
    for i, c in enumerate(result.checks, 1):
        lines += [f"### {i}. {c.name} — {'pass' if c.passed else 'FAIL'}", "", f"`POST {c.url}`", "",
                  "```json", json.dumps(c.request, indent=2, ensure_ascii=False), "```", "",
                  "Answer:", "", "```text", c.answer or "(none)", "```", ""]
        if not c.passed:
            lines += [f"**Problem:** {c.detail}", ""]
    return str(scrub("\n".join(lines)))
