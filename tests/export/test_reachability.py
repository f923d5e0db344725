"""An unreachable gs:// source fails in seconds with what to check, not after the
client's default two minutes of retries (the bound here is the test's timeout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import make_adapter


@pytest.mark.timeout(60)
def test_unreachable_base_model_fails_fast_naming_what_to_check(tiny_llama: Path, tmp_path: Path, cli: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # discard port: nothing listens

    code, _, err = cli("export", adapter, tmp_path / "dest", "--base-model", "gs://user:hunter2@bucket/base")

    assert code == 1
    assert "cannot be reached" in err and "STORAGE_EMULATOR_HOST" in err
    assert "hunter2" not in err
    assert "Traceback" not in err
