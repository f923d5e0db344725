"""``validate_checkpoint``: the one entry point the CLI verb and the KFP component call.

Problems in the checkpoint are findings, never exceptions; only an unreadable source
(``SourceError``) or bad options (``UsageError``) raise. Reads headers and small JSON
files only (ranged reads on GCS), except with ``verify_checksums``.
"""

from __future__ import annotations

import time

from tune2serve.components.checkpoint.identity import folder_identity
from tune2serve.components.checkpoint.storage import Folder, ObjectInfo, open_folder
from tune2serve.components.errors import CheckpointError, SourceError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.validate import engines
from tune2serve.components.validate.checks import CHECKS
from tune2serve.components.validate.context import ValidateOptions, load_checkpoint
from tune2serve.components.validate.findings import Finding, Report, cap_repeated, error, promote_warnings

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
        UsageError: the source URI is malformed, or ``options.target_vllm`` is no vLLM
            release validate knows.
    """
    started = time.perf_counter()
    target = engines.target(options.target_vllm)  # an unknown --target-vllm is a usage error before any read
    folder = open_folder(source)
    log_event(_log, "validate.start", f"validating {folder.uri}", source=folder.uri)
    listing = folder.list()
    ckpt = load_checkpoint(folder, listing, options)
    findings = _not_a_model_folder(folder.uri, [o.name for o in listing])
    if not findings:
        for _name, check in CHECKS:
            findings.extend(check(ckpt))
    if options.strict:
        findings = promote_warnings(findings)
    findings = cap_repeated(findings)
    identity = identify(folder, listing)
    summary = {
        "family": None, "model_type": None, "matched_model": None, "parameters": None,
        "parameters_source": None, "weight_format": _weight_format(ckpt.weights.safetensors, ckpt.weights.bins),
        "weight_bytes": ckpt.weight_bytes(), "files": len(ckpt.sizes), **ckpt.summary,
        "strict": options.strict, "bytes_read": folder.bytes_read, "read_requests": folder.requests,
        "elapsed_s": round(time.perf_counter() - started, 3), "identity": identity,
        "target_engine": {"vllm": target.vllm, "transformers": target.transformers},
        "proven_against": engines.proven(),
    }
    report = Report(source=folder.uri, findings=findings, summary=summary)
    log_event(_log, "validate.done", f"{folder.uri}: {'deployable' if report.ok else 'NOT deployable'}",
              source=folder.uri, errors=report.count("error"), warnings=report.count("warning"),
              bytes_read=folder.bytes_read, elapsed_s=summary["elapsed_s"])
    return report


def _not_a_model_folder(uri: str, names: list[str]) -> list[Finding]:
    """A folder with files but neither ``config.json`` nor weights at its top level is not
    a model folder — most often its parent, given by mistake. Said first and alone: every
    check on it would only restate it (a tuning output's parent once gave 130,000
    findings). The subfolders that do hold a ``config.json`` are named as likely meant."""
    top = {n for n in names if "/" not in n}
    if not names or "config.json" in top or any(n.endswith((".safetensors", ".bin")) for n in top):
        return []
    candidates = sorted({n.rsplit("/", 1)[0] for n in names if n.endswith("/config.json")}, key=lambda p: (p.count("/"), p))
    hint = f"; folders below it that hold one: {', '.join(candidates[:5])}{' …' if len(candidates) > 5 else ''}" \
        if candidates else ""
    return [error("not-a-model-folder",
                  f"{uri} holds no config.json and no weights at its top level: it is not a model folder{hint}")]


def identify(folder: Folder, listing: list[ObjectInfo]) -> dict[str, str] | None:
    """Which files were validated, as deploy identifies a folder (``checkpoint/identity.py``:
    the manifest's digest, or the digest of the objects' names, sizes and crc32c), from
    the listing validate read. In the pipeline deploy compares it with the folder it is
    about to deploy and reuses this validation only for exactly these files. None when
    the folder has no such identity (a local folder without a manifest, a manifest that
    does not match its files or cannot be read): then deploy validates again."""
    try:
        found = folder_identity(folder, listing)
    except (CheckpointError, SourceError):
        return None
    return {"basis": found.basis, "digest": found.digest}


def _weight_format(safetensors: list[str], bins: list[str]) -> str | None:
    if safetensors and bins:
        return "mixed"
    return "safetensors" if safetensors else ("bin" if bins else None)
