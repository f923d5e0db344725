"""`tune2serve run` (interim demo): the good model passes, the broken ones fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tune2serve.pipelines.cli import main


@pytest.mark.timeout(120)
def test_run_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--workdir", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert code == 0
    assert "✓ good-model: DEPLOYABLE" in out and "✓ gptq-config: NOT DEPLOYABLE" in out
    assert sorted(p.name for p in (tmp_path / "demo" / "reports").iterdir()) == sorted(
        f"{n}.{ext}" for n in ("good-model", "gptq-config", "index-path-traversal") for ext in ("md", "html"))
