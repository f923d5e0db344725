"""The folder walker and every reader behind it: FIFOs, sockets, symlink loops,
dangling links and links that leave the folder, named like any file validate or export
reads. Each is refused by name; none blocks (a FIFO open would hang the test)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ, assert_refused, run_export, run_validate

NAMES = ["config.json", "tokenizer_config.json", "generation_config.json", "tokenizer.json", "model.safetensors",
         "model.safetensors.index.json", "special_tokens_map.json"]
KINDS = ["fifo", "loop", "dangling", "outside-file", "outside-dir", "socket"]


def _plant(folder: Path, name: str, kind: str, outside: Path) -> None:
    path = folder / name
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        os.symlink(path.name + ".b", path)
        os.symlink(path.name, path.with_name(path.name + ".b"))
    elif kind == "dangling":
        os.symlink("does-not-exist", path)
    elif kind == "outside-file":
        (outside / "secret.txt").write_text("secret")
        os.symlink(outside / "secret.txt", path)
    elif kind == "outside-dir":
        (outside / "d").mkdir(exist_ok=True)
        (outside / "d" / "secret.txt").write_text("secret")
        os.symlink(outside / "d", path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        try:
            s.bind(str(path))
        except OSError:  # path too long for a unix socket on this machine: a FIFO instead
            os.mkfifo(path)
        finally:
            s.close()


@pytest.mark.timeout(120)
@FUZZ
@given(name=st.sampled_from(NAMES), kind=st.sampled_from(KINDS))
def test_validate_names_every_non_regular_entry(name: str, kind: str, tiny_llama: Path, tmp_path_factory,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path_factory.mktemp("walk")
    folder, outside = base / "ckpt", base / "outside"
    shutil.copytree(tiny_llama, folder)
    outside.mkdir()
    _plant(folder, name, kind, outside)

    code, doc, err = run_validate(folder, capsys)

    assert_refused(code, doc, err, name)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "generation_config.json", "model.safetensors"])
@pytest.mark.parametrize("kind", ["fifo", "loop", "outside-dir"])
def test_export_refuses_without_blocking_or_copying(name: str, kind: str, tiny_llama: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder, outside, dest = tmp_path / "ckpt", tmp_path / "outside", tmp_path / "dest"
    shutil.copytree(tiny_llama, folder)
    outside.mkdir()
    (folder / "generation_config.json").write_text("{}")
    _plant(folder, name, kind, outside)

    code, text = run_export([str(folder), str(dest)], capsys)

    assert code == 1, text
    assert "Traceback" not in text
    assert name in text
    assert not any(dest.rglob("secret.txt")) if dest.exists() else True
