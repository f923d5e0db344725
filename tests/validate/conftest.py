"""Fixtures for validate: the three good tiny models by name, and a helper that runs the
real CLI in-process and returns (exit code, parsed JSON, stderr)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tune2serve.cli.main import main


@pytest.fixture
def good_models(tiny_llama: Path, tiny_qwen_sharded: Path, tiny_llama_bin: Path) -> dict[str, Path]:
    return {"llama": tiny_llama, "qwen_sharded": tiny_qwen_sharded, "llama_bin": tiny_llama_bin}


CliResult = tuple[int, dict[str, Any], str]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``tune2serve validate ARGS --json`` in this process."""

    def run(*args: str) -> CliResult:
        code = main(["validate", *args, "--json"])
        out, err = capsys.readouterr()
        doc = json.loads(out) if out.strip() else {}
        return code, doc, err

    return run
