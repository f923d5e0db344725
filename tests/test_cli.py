"""The command line's own contract: help, version, usage errors, lazy heavy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tune2serve.components.errors import (
    CheckpointError,
    SourceNotFoundError,
    UsageError,
    VertexUnavailableError,
)
from tune2serve.cli.main import VERBS, exit_code_for, main

HEAVY_MODULES = ("torch", "transformers", "google.cloud.aiplatform", "vertexai", "kfp", "peft")


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_help_imports_nothing_heavy() -> None:
    """`tune2serve --help` must start fast: none of the heavy libraries may load."""
    code = (
        "import sys\n"
        "from tune2serve.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY="


def test_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_no_verb_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: tune2serve" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "0.1.0"


@pytest.mark.parametrize(
    ("error", "verb", "code"),
    [
        (UsageError("x"), "deploy", 2),
        (SourceNotFoundError("x"), "validate", 2),
        (SourceNotFoundError("x"), "export", 1),
        (CheckpointError("x"), "validate", 1),
        (VertexUnavailableError("x"), "deploy", 1),
    ],
)
def test_exit_code_table(error: Exception, verb: str, code: int) -> None:
    assert exit_code_for(error, verb) == code
