"""Fuzz-style tests of every reader of untrusted checkpoint files: small, deterministic
hypothesis generators (``derandomize``), each example run through the real CLI verbs
in-process, asserting the one contract: exit 1 or 2, a finding or message naming the
file, no traceback, no payload ever run, well under 5 s."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from tune2serve.cli.main import main

settings.register_profile(
    "fuzz", derandomize=True, max_examples=25, deadline=5000, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZ = settings.get_profile("fuzz")

CliRun = tuple[int, dict[str, Any], str]


def run_validate(folder: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> CliRun:
    """``tune2serve validate FOLDER --json`` in this process; an escaping exception is a
    test failure with its traceback (the CLI must turn everything into an exit code)."""
    try:
        code = main(["validate", str(folder), "--json", *extra])
    except BaseException:  # pragma: no cover - the failure being tested for
        pytest.fail(f"validate raised:\n{traceback.format_exc()}")
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


def run_export(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(["export", *args])
    except BaseException:  # pragma: no cover
        pytest.fail(f"export raised:\n{traceback.format_exc()}")
    out, err = capsys.readouterr()
    return code, out + err


def assert_refused(code: int, doc: dict[str, Any], err: str, file: str) -> None:
    """Exit 1 or 2, an error finding (its file or its message) or the error message
    naming ``file``, no traceback."""
    assert code in (1, 2), (code, doc, err)
    assert "Traceback" not in err, err
    named = [f for f in doc.get("findings", []) if f.get("severity") == "error"
             and (file in (f.get("file") or "") or file in f.get("message", ""))]
    assert named or file in err, (file, doc.get("findings"), err)

