"""Every malformed checkpoint: exit 1, a finding with the right code naming the right
file, no traceback — through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.broken_models import SENTINEL_ENV, VARIANTS, BrokenVariant, make_broken, variant

SUBPROCESS_SUBSET = ["header-length-2^60", "index-path-traversal", "unsafe-pickle-bare", "gptq-config",
                     "empty-shard", "symlink-outside"]


def test_there_are_at_least_30_variants() -> None:
    assert len(VARIANTS) >= 30
    assert len({v.name for v in VARIANTS}) == len(VARIANTS)


@pytest.mark.timeout(10, func_only=True)
@pytest.mark.parametrize("broken", VARIANTS, ids=[v.name for v in VARIANTS])
def test_broken_checkpoint_fails_with_its_finding(broken: BrokenVariant, good_models: dict[str, Path], tmp_path: Path,
                                                  run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = tmp_path / "SENTINEL"
    monkeypatch.setenv(SENTINEL_ENV, str(sentinel))
    folder = make_broken(good_models[broken.base], tmp_path / "ckpt", broken)

    code, doc, err = run_cli(str(folder))

    assert code == 1
    assert doc["ok"] is False
    matching = [f for f in doc["findings"] if f["code"] == broken.code and f["file"] == broken.file]
    assert matching, f"expected {broken.code} on {broken.file}, got {[(f['code'], f['file']) for f in doc['findings']]}"
    assert matching[0]["severity"] == "error"
    assert len(matching[0]["message"]) > 20
    assert "Traceback" not in err
    assert not sentinel.exists(), "validate ran code from a pickle"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", SUBPROCESS_SUBSET)
def test_real_cli_subprocess(name: str, good_models: dict[str, Path], tmp_path: Path) -> None:
    broken = variant(name)
    sentinel = tmp_path / "SENTINEL"
    env = {**os.environ, SENTINEL_ENV: str(sentinel)}
    folder = make_broken(good_models[broken.base], tmp_path / "ckpt", broken)
    proc = subprocess.run([sys.executable, "-m", "tune2serve.cli.main", "validate", str(folder), "--json"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert (broken.code, broken.file) in {(f["code"], f["file"]) for f in doc["findings"]}
    assert "Traceback" not in proc.stderr
    assert not sentinel.exists()


def test_unsafe_pickle_names_the_global(good_models: dict[str, Path], tmp_path: Path, run_cli,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SENTINEL_ENV, str(tmp_path / "SENTINEL"))
    folder = make_broken(good_models["llama_bin"], tmp_path / "ckpt", variant("unsafe-pickle-zip"))
    _code, doc, _err = run_cli(str(folder))
    finding = next(f for f in doc["findings"] if f["code"] == "unsafe-pickle")
    assert "posix.system" in finding["message"]
    assert not (tmp_path / "SENTINEL").exists()


def test_empty_folder_is_a_finding_not_a_usage_error(tmp_path: Path, run_cli) -> None:
    (tmp_path / "empty").mkdir()
    code, doc, _err = run_cli(str(tmp_path / "empty"))
    assert code == 1
    assert [f["code"] for f in doc["findings"]] == ["empty-folder"]
