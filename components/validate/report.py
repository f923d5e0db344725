"""The report in three forms: plain text for a terminal, Markdown for the KFP Markdown
artifact, and a self-contained HTML page (inline CSS, no external assets, every value
escaped) for the Vertex AI Pipelines UI. Stable element ids (``verdict``, ``summary``,
``findings``, ``findings-error``/``-warning``/``-info``) let browser tests find them."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tune2serve.components import markdown as md
from tune2serve.components.validate.findings import Finding, Report
from tune2serve.components.validate.memory import human_bytes

SEVERITIES = ("error", "warning", "info")
_ICON = {"error": "✗", "warning": "!", "info": "·"}


def verdict(report: Report) -> str:
    if report.ok:
        warnings = report.count("warning")
        return "DEPLOYABLE" + (f" with {warnings} warning{'s' * (warnings != 1)}" if warnings else "")
    errors = report.count("error")
    return f"NOT DEPLOYABLE: {errors} error{'s' * (errors != 1)}"


def summary_rows(report: Report) -> list[tuple[str, str]]:
    """The headline figures, as (label, value) strings."""
    s: dict[str, Any] = report.summary
    params = s.get("parameters")
    spec = s.get("machine_spec")
    rec = s.get("recommended_machine_spec")
    rows = [
        ("Model", " / ".join(str(x) for x in (s.get("family"), s.get("model_type")) if x) or "unknown"),
        ("Matches", s.get("matched_model") or "no listed size"),
        ("Parameters", (f"{params:,}" + (" (estimated from config)" if s.get("parameters_source") == "config estimate"
                                         else "")) if params else "unknown"),
        ("Weights", f"{human_bytes(s.get('weight_bytes') or 0)} in {s.get('shards') or 0} "
                    f"{s.get('weight_format') or ''} file(s), {s.get('tensors') or 0} tensors"),
        ("Serving memory (est.)", human_bytes(s["serving_memory_bytes"]) if s.get("serving_memory_bytes") is not None
         else "unknown"),
        ("Machine spec", _spec(spec) + (f" ({s['machine_spec_usable_gb']:.1f} GiB usable)" if spec else "")),
        ("Recommended spec", _spec(rec) if rec else "none of the single-host specs"),
        ("Read", f"{human_bytes(s.get('bytes_read') or 0)} in {s.get('read_requests', 0)} requests, "
                 f"{s.get('elapsed_s', 0):.2f} s"),
    ]
    return rows


def _spec(spec: dict[str, Any] | None) -> str:
    if not spec:
        return "not given"
    return f"{spec['machine_type']} · {spec['accelerator_count']} × {spec['accelerator_type']}"


def render_text(report: Report) -> str:
    lines = [f"{report.source}", f"  {verdict(report)}", ""]
    width = max(len(label) for label, _ in summary_rows(report))
    lines += [f"  {label:<{width}}  {value}" for label, value in summary_rows(report)]
    lines.append("")
    for f in report.sorted_findings():
        where = f" [{f.file}]" if f.file else ""
        lines.append(f"  {_ICON[f.severity]} {f.severity:<7} {f.code}{where}")
        lines.append(f"      {f.message}")
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """Every value from the checkpoint (source, file names, config values in the figures
    and messages) through ``markdown.text``: literal text in the rendered page."""
    out = [f"# Checkpoint validation: {'✅' if report.ok else '❌'} {verdict(report)}", "",
           f"Source: {md.text(report.source)}", "", "| | |", "|---|---|"]
    out += [f"| {md.text(label)} | {md.text(value)} |" for label, value in summary_rows(report)]
    for severity in SEVERITIES:
        items = [f for f in report.findings if f.severity == severity]
        if not items:
            continue
        out += ["", f"## {severity.capitalize()}s ({len(items)})", "", "| code | file | message |", "|---|---|---|"]
        out += [f"| {md.text(f.code)} | {md.text(f.file) if f.file else '—'} | {md.text(f.message)} |" for f in items]
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1f2328}
main{max-width:1100px;margin:0 auto;padding:24px}
#verdict{padding:20px 24px;border-radius:10px;color:#fff;font-size:1.5em;font-weight:600}
#verdict.pass{background:#1a7f37}#verdict.fail{background:#cf222e}
#verdict small{display:block;font-size:.55em;font-weight:400;opacity:.9;margin-top:4px;word-break:break-all}
h2{margin-top:28px;font-size:1.15em}
#summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:12px;margin-top:16px}
.figure{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 14px}
.figure .label{font-size:.8em;color:#57606a;text-transform:uppercase;letter-spacing:.04em}
.figure .value{font-size:1.05em;margin-top:4px;word-break:break-word}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #d0d7de;border-radius:8px;overflow:hidden}
th,td{text-align:left;padding:8px 10px;border-bottom:1px solid #eaeef2;vertical-align:top;font-size:.92em}
th{background:#f0f2f4}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
.sev{font-weight:600;border-radius:12px;padding:2px 8px;font-size:.8em;white-space:nowrap}
.sev.error{background:#ffebe9;color:#cf222e}.sev.warning{background:#fff8c5;color:#9a6700}
.sev.info{background:#ddf4ff;color:#0969da}
.none{color:#57606a}
"""


def render_html(report: Report) -> str:
    e = html.escape
    status = "pass" if report.ok else "fail"
    figures = "".join(
        f'<div class="figure"><div class="label">{e(label)}</div><div class="value">{e(value)}</div></div>'
        for label, value in summary_rows(report)
    )
    sections = []
    for severity in SEVERITIES:
        items = [f for f in report.findings if f.severity == severity]
        if items:
            sections.append(f'<section id="findings-{severity}"><h3>{e(severity.capitalize())}s ({len(items)})</h3>'
                            f"{_html_table(items)}</section>")
    body = "".join(sections) or '<p class="none">No findings.</p>'
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{e(verdict(report))} — "
        f"{e(report.source)}</title><style>{_CSS}</style></head><body><main>"
        f'<div id="verdict" class="{status}" data-ok="{str(report.ok).lower()}">{e(verdict(report))}'
        f"<small>{e(report.source)}</small></div>"
        f'<h2>Summary</h2><div id="summary">{figures}</div>'
        f'<h2>Findings</h2><div id="findings">{body}</div>'
        "</main></body></html>\n"
    )


_NO_FILE = '<span class="none">—</span>'


def _html_table(items: list[Finding]) -> str:
    e = html.escape
    rows = "".join(
        f'<tr class="finding {e(f.severity)}" data-code="{e(f.code)}"><td><span class="sev {e(f.severity)}">'
        f"{e(f.severity)}</span></td><td><code>{e(f.code)}</code></td>"
        f"<td>{'<code>' + e(f.file) + '</code>' if f.file else _NO_FILE}</td>"
        f"<td>{e(f.message)}</td></tr>"
        for f in items
    )
    return f"<table><thead><tr><th>severity</th><th>code</th><th>file</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>"


def write_reports(report: Report, directory: Path, stem: str = "report") -> tuple[Path, Path]:
    """Writes ``<stem>.md`` and ``<stem>.html`` into ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    md, page = directory / f"{stem}.md", directory / f"{stem}.html"
    md.write_text(render_markdown(report), encoding="utf-8")
    page.write_text(render_html(report), encoding="utf-8")
    return md, page
