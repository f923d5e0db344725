"""``validate_checkpoint``: the one entry point the CLI verb and the KFP component call.

Problems in the checkpoint are findings, never exceptions; only an unreadable source
(``SourceError``) or bad options (``UsageError``) raise. Reads headers and small JSON
files only (ranged reads on GCS), except with ``verify_checksums``.
"""

from __future__ import annotations

import time

from tune2serve.components.checkpoint.storage import open_folder
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.validate.checks import CHECKS
from tune2serve.components.validate.context import ValidateOptions, load_checkpoint
from tune2serve.components.validate.findings import Report, promote_warnings

_log = get_logger("validate")


def validate_checkpoint(source: str, options: ValidateOptions = ValidateOptions()) -> Report:
    """Checks that ``source`` (a local folder or gs://bucket/prefix) is deployable as
    Vertex AI custom weights.

    Args:
        source: the checkpoint folder.
        options: strictness, machine spec, checksum and base-model comparison.

    Returns:
        The report: ``ok`` is False when at least one finding is an error.

    Raises:
        SourceError: the folder cannot be listed or read (missing, permissions, network).
        UsageError: the source URI is malformed.
    """
    started = time.perf_counter()
    folder = open_folder(source)
    log_event(_log, "validate.start", f"validating {folder.uri}", source=folder.uri)
    listing = folder.list()
    ckpt = load_checkpoint(folder, listing, options)
    findings = []
    for _name, check in CHECKS:
        findings.extend(check(ckpt))
    if options.strict:
        findings = promote_warnings(findings)
    summary = {
        "family": None, "model_type": None, "matched_model": None, "parameters": None,
        "parameters_source": None, "weight_format": _weight_format(ckpt.weights.safetensors, ckpt.weights.bins),
        "weight_bytes": ckpt.weight_bytes(), "files": len(ckpt.sizes), **ckpt.summary,
        "strict": options.strict, "bytes_read": folder.bytes_read, "read_requests": folder.requests,
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    report = Report(source=folder.uri, findings=findings, summary=summary)
    log_event(_log, "validate.done", f"{folder.uri}: {'deployable' if report.ok else 'NOT deployable'}",
              source=folder.uri, errors=report.count("error"), warnings=report.count("warning"),
              bytes_read=folder.bytes_read, elapsed_s=summary["elapsed_s"])
    return report


def _weight_format(safetensors: list[str], bins: list[str]) -> str | None:
    if safetensors and bins:
        return "mixed"
    return "safetensors" if safetensors else ("bin" if bins else None)
