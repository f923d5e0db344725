"""Markdown and HTML reports: escaped, self-contained, with stable ids."""

from __future__ import annotations

import re

from tune2serve.components.validate.findings import Report, error, info, warning
from tune2serve.components.validate.report import render_html, render_markdown, render_text, verdict


def _report() -> Report:
    return Report(
        source="gs://b/<script>alert(1)</script>",
        findings=[info("memory-fits", "fits"), warning("python-files", "x.py is code", "x.py"),
                  error("remote-code", 'auto_map <img src=x onerror="alert(1)"> | pipe', "config.json")],
        summary={"parameters": 123, "weight_bytes": 2048, "shards": 1, "weight_format": "safetensors",
                 "serving_memory_bytes": 4096, "bytes_read": 10, "read_requests": 2, "elapsed_s": 0.01},
    )


def test_html_is_escaped_self_contained_and_has_ids() -> None:
    page = render_html(_report())
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x" in page
    for element_id in ("verdict", "summary", "findings", "findings-error", "findings-warning", "findings-info"):
        assert f'id="{element_id}"' in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no external assets
    assert '<header id="verdict" class="banner fail" data-ok="false">' in page
    assert '<tr data-code="remote-code" data-severity="error">' in page
    # errors come before warnings before infos
    assert page.index('id="findings-error"') < page.index('id="findings-warning"') < page.index('id="findings-info"')


def test_markdown_escapes_table_pipes_and_groups_by_severity() -> None:
    md = render_markdown(_report())
    assert md.startswith("# Checkpoint validation: ❌ NOT DEPLOYABLE: 1 error")
    assert "pipe" in md and "\\| pipe" in md
    assert md.index("## Errors (1)") < md.index("## Warnings (1)") < md.index("## Infos (1)")
    # the source and the message are literal text (tests/test_markdown.py renders them)
    assert "<script>" not in md and "<img" not in md and "&lt;img src=x onerror=\"alert(1)\"&gt;" in md


def test_text_and_verdict() -> None:
    assert verdict(Report("x")) == "DEPLOYABLE"
    assert "✗ error   remote-code [config.json]" in render_text(_report())
