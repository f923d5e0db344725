"""Findings and the report that collects them.

A finding is one observation about a checkpoint with a stable ``code`` (scripts and
tests match on it), a severity, a message that names the problem and what to do, and
the file it concerns (relative to the checkpoint folder, or None for the folder). The
codes and their meaning are listed in ``CODES`` and in POLICY.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from tune2serve.components.checkpoint.secrets import redact

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str
    file: str | None = None

    def __post_init__(self) -> None:
        # A message may quote a config value or a file name: no credential shape reaches a
        # report, --json or a log through it (checkpoint/secrets.py's shapes).
        object.__setattr__(self, "message", redact(self.message))
        if self.file is not None:
            object.__setattr__(self, "file", redact(self.file))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def error(code: str, message: str, file: str | None = None) -> Finding:
    return Finding("error", code, message, file)


def warning(code: str, message: str, file: str | None = None) -> Finding:
    return Finding("warning", code, message, file)


def info(code: str, message: str, file: str | None = None) -> Finding:
    return Finding("info", code, message, file)


@dataclass
class Report:
    """Everything validate found about one source. ``ok`` is the gate: no error finding."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def codes(self, severity: Severity | None = None) -> list[str]:
        return [f.code for f in self.findings if severity is None or f.severity == severity]

    def sorted_findings(self) -> list[Finding]:
        """Errors first, then warnings, then infos; stable within a severity."""
        return sorted(self.findings, key=lambda f: SEVERITY_ORDER[f.severity])

    def to_dict(self) -> dict[str, Any]:
        summary = {**self.summary, "errors": self.count("error"), "warnings": self.count("warning"),
                   "infos": self.count("info")}
        return {"ok": self.ok, "source": self.source,
                "findings": [f.to_dict() for f in self.sorted_findings()], "summary": summary}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)


MAX_PER_CODE = 20


def cap_repeated(findings: list[Finding], limit: int = MAX_PER_CODE) -> list[Finding]:
    """At most ``limit`` findings of one code, then one more of the same code and severity
    saying how many were left out: a folder with 10,000 stray files yields a readable
    report, and the gate (any error) is unchanged since the first ones are kept."""
    seen: dict[str, int] = {}
    kept: list[Finding] = []
    for f in findings:
        seen[f.code] = seen.get(f.code, 0) + 1
        if seen[f.code] <= limit:
            kept.append(f)
    for f in list(kept):
        if seen.get(f.code, 0) > limit:
            more = seen.pop(f.code) - limit
            kept.append(Finding(f.severity, f.code, f"… and {more} more {f.code} findings", None))
    return kept


def promote_warnings(findings: list[Finding]) -> list[Finding]:
    """``--strict``: every warning becomes an error (the message says why)."""
    return [
        replace(f, severity="error", message=f"{f.message} (an error because of --strict)")
        if f.severity == "warning" else f
        for f in findings
    ]
