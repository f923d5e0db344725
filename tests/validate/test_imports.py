"""validate never imports torch, transformers or aiplatform: it must start fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
from tune2serve.cli.main import main
code = main(["validate", sys.argv[1], "--json"])
heavy = [m for m in ("torch", "transformers", "google.cloud.aiplatform", "kfp") if m in sys.modules]
sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fixture", ["tiny_qwen_sharded", "tiny_llama_bin"])
def test_validate_imports_nothing_heavy(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, timeout=60)
    heavy = json.loads(proc.stderr.rsplit("HEAVY=", 1)[1])
    assert heavy == []
    assert json.loads(proc.stdout)["ok"] is True
