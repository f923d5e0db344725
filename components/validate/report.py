"""The report in three forms: plain text for a terminal, Markdown for the KFP Markdown
artifact, and a self-contained HTML page in the reports' one look (``report_html``: every
value escaped) for the Vertex AI Pipelines UI. Stable element ids (``verdict``, ``summary``,
``findings``, ``findings-error``/``-warning``/``-info``) let browser tests find them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tune2serve.components import markdown as md
from tune2serve.components.report_html import Badge, Card, Code, Para, Row, Section, Table, Tone, Verdict, page
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
        ("Target engine", _engine(s.get("target_engine"), " (transformers >= {transformers})")),
        ("Proven against", _engine(s.get("proven_against"), " + transformers {transformers}")),
    ]
    return rows


def _engine(engine: dict[str, Any] | None, tail: str) -> str:
    """``vLLM 0.32.0`` + its transformers: which engine a verdict is for, or was proven against."""
    if not engine or not engine.get("vllm"):
        return "unknown"
    return f"vLLM {engine['vllm']}" + (tail.format(**engine) if engine.get("transformers") else "")


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


def render_html(report: Report) -> str:
    """The page in the reports' one look (``report_html``): the verdict banner (``#verdict``,
    ``data-ok``), the figures as cards (``#summary``), the findings by severity
    (``#findings-error``/``-warning``/``-info``, each row's ``data-code``)."""
    sections = [Section(f"{severity.capitalize()}s ({len(items)})", [_findings_table(items)],
                        id=f"findings-{severity}")
                for severity in SEVERITIES if (items := [f for f in report.findings if f.severity == severity])]
    findings = Section("Findings", sections or [Para("No findings.")], id="findings")
    banner = Verdict(verdict(report), "pass" if report.ok else "fail", detail=report.source,
                     data={"ok": str(report.ok).lower()})
    return page(f"{verdict(report)} — {report.source}", banner,
                [Card(label, value) for label, value in summary_rows(report)], [findings], kind="validate")


_TONE: dict[str, Tone] = {"error": "fail", "warning": "warn", "info": "info"}


def _findings_table(items: list[Finding]) -> Table:
    return Table(("severity", "code", "file", "message"), [
        Row((Badge(f.severity, _TONE[f.severity]), Code(f.code), Code(f.file) if f.file else None, f.message),
            data={"code": f.code, "severity": f.severity}) for f in items])


def write_reports(report: Report, directory: Path, stem: str = "report") -> tuple[Path, Path]:
    """Writes ``<stem>.md`` and ``<stem>.html`` into ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    md, html_page = directory / f"{stem}.md", directory / f"{stem}.html"
    md.write_text(render_markdown(report), encoding="utf-8")
    html_page.write_text(render_html(report), encoding="utf-8")
    return md, html_page
