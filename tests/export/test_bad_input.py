"""Bad input: exit 1, a message that says what to do, and nothing at DEST."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import assert_nothing_published, make_adapter


def _shape_mismatch(tmp: Path, llama: Path, qwen: Path) -> tuple[list[str], str]:
    from tune2serve.demo.tiny_models import TinySpec, make_tiny_model

    wider = make_tiny_model(tmp / "wider-llama", TinySpec(hidden_size=192, intermediate_size=256))
    adapter = make_adapter(wider, tmp / "wider-adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    return [adapter, "--base-model", llama], (r"update for model.layers.0.self_attn.q_proj.weight has shape \[192, 192\].*"
                                              r"base tensor is \[128, 128\].*pass the right --base-model")


def _target_absent(tmp: Path, llama: Path, qwen: Path) -> tuple[list[str], str]:
    from safetensors.torch import load_file, save_file

    adapter = make_adapter(llama, tmp / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    path = adapter / "adapter_model.safetensors"
    save_file({k.replace("layers.1.", "layers.7."): v for k, v in load_file(path).items()}, path)
    return [adapter], r"targets model.layers.7.self_attn.q_proj, but the base model has no tensor model.layers.7.self_attn.q_proj.weight"


def _missing_base(tmp: Path, llama: Path, qwen: Path) -> tuple[list[str], str]:
    adapter = make_adapter(llama, tmp / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    return [adapter, "--base-model", tmp / "no-such-base"], r"--base-model.*cannot be opened.*pass --base-model"


def _empty_dir(tmp: Path, llama: Path, qwen: Path) -> tuple[list[str], str]:
    (tmp / "empty").mkdir()
    return [tmp / "empty"], r"no checkpoint found"


def _unknown_dir(tmp: Path, llama: Path, qwen: Path) -> tuple[list[str], str]:
    (tmp / "unknown").mkdir()
    (tmp / "unknown" / "notes.txt").write_text("hello")
    (tmp / "unknown" / "data.csv").write_text("a,b")
    return [tmp / "unknown"], r"no checkpoint found .*found data.csv, notes.txt"


def _corrupted_shard(tmp: Path, llama: Path, qwen: Path) -> tuple[list[str], str]:
    src = tmp / "corrupt"
    shutil.copytree(qwen, src)
    shard = sorted(src.glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    return [src], rf"{shard.name}: corrupt safetensors file: .*re-save or re-upload this shard"


def _unsafe_pickle(tmp: Path, llama: Path, qwen: Path) -> tuple[list[str], str]:
    import collections

    import torch

    src = tmp / "evil"
    shutil.copytree(llama, src)
    (src / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2), "payload": collections.Counter(a=1)}, src / "pytorch_model.bin")
    return [src], r"pytorch_model.bin: pickle references collections.Counter.*was not loaded"


CASES: dict[str, Callable[[Path, Path, Path], tuple[list[Any], str]]] = {
    "shape_mismatch": _shape_mismatch, "target_absent": _target_absent, "missing_base": _missing_base,
    "empty_dir": _empty_dir, "unknown_dir": _unknown_dir, "corrupted_shard": _corrupted_shard,
    "unsafe_pickle": _unsafe_pickle,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_1_with_nothing_at_dest(case: str, tiny_llama: Path, tiny_qwen_sharded: Path, tmp_path: Path,
                                                 cli: Any) -> None:
    args, message = CASES[case](tmp_path, tiny_llama, tiny_qwen_sharded)
    dest = tmp_path / "dest"
    code, doc, err = cli("export", *args[:1], dest, *args[1:], "--json")
    assert code == 1, err
    assert doc is not None and doc["ok"] is False
    assert len(err.splitlines()) == 1 or "Traceback" not in err
    import re

    assert re.search(message, err), err
    assert_nothing_published(dest)


def test_bad_input_leaves_existing_empty_dest_empty(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    (tmp_path / "empty").mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    code, _, err = cli("export", tmp_path / "empty", dest)
    assert code == 1 and dest.is_dir() and list(dest.iterdir()) == []


def test_destination_not_writable(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    (tmp_path / "a-file").write_text("x")
    code, _, err = cli("export", tiny_llama, tmp_path / "a-file" / "export")
    assert code == 1 and "cannot be written" in err and "choose a DEST you can write to" in err


def test_destination_with_foreign_files_is_refused(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "README.md").write_text("mine")
    code, _, err = cli("export", tiny_llama, dest)
    assert code == 1 and "holds no tune2serve export (found README.md)" in err
    assert sorted(p.name for p in dest.iterdir()) == ["README.md"]


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "newest"], "expected final, best, latest or a step number"),
    (["--max-shard-size", "5 parsecs"], "is not a size such as 5GB"),
    (["--dtype", "int8"], "invalid choice"),
])
def test_usage_errors_exit_2(args: list[str], message: str, tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    code, _, err = cli("export", tiny_llama, tmp_path / "dest", *args)
    assert code == 2 and message in err
    assert_nothing_published(tmp_path / "dest")


def test_unknown_peft_type_is_refused(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, use_dora=False, target_modules=["q_proj"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["peft_type"] = "IA3"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    code, _, err = cli("export", adapter, tmp_path / "dest")
    assert code == 1 and "peft_type IA3 cannot be merged" in err
    assert_nothing_published(tmp_path / "dest")
