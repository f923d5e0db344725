"""What the KFP component writes: the reports and the metrics. Kept out of
component.py (no kfp import here) so it is tested as plain Python."""

from __future__ import annotations

from pathlib import Path

from tune2serve.components.errors import SourceError
from tune2serve.components.ranges import check_parameters
from tune2serve.components.validate.context import ValidateOptions
from tune2serve.components.validate.findings import Report, error
from tune2serve.components.validate.report import render_html, render_markdown
from tune2serve.components.validate.validator import validate_checkpoint
from tune2serve.components.vertex.machine_spec import parse_machine_spec


def options_from_parameters(strict: bool, machine_type: str, accelerator_type: str, accelerator_count: int,
                            verify_checksums: bool, base_model: str) -> ValidateOptions:
    """Pipeline parameters use "" and 0 for "not set"; the numbers in their documented ranges."""
    check_parameters(accelerator_count=accelerator_count)
    spec = parse_machine_spec(machine_type or None, accelerator_type or None, accelerator_count or None)
    return ValidateOptions(strict=strict, machine_spec=spec, verify_checksums=verify_checksums,
                           base_model=base_model or None)


def validate_for_pipeline(source: str, options: ValidateOptions) -> Report:
    """Like ``validate_checkpoint``, but an unreadable source is a failing report (the
    pipeline gates on ``passed`` and the UI shows why) instead of an exception."""
    try:
        return validate_checkpoint(source, options)
    except SourceError as e:
        return Report(source=source, findings=[error("source-unreadable", f"{e}; check the URI and the pipeline's "
                                                                           "service account permissions", e.file)])


def write_report_files(report: Report, markdown_path: str, html_path: str) -> None:
    for path, text in ((markdown_path, render_markdown(report)), (html_path, render_html(report))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")


def report_metrics(report: Report) -> dict[str, float]:
    """The KFP Metrics: numbers only."""
    s = report.summary
    return {
        "parameters": float(s.get("parameters") or 0),
        "weight_bytes": float(s.get("weight_bytes") or 0),
        "shards": float(s.get("shards") or 0),
        "serving_memory_gb": float(s.get("serving_memory_gb") or 0),
        "errors": float(report.count("error")),
        "warnings": float(report.count("warning")),
    }
