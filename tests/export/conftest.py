"""Fixtures for the export tests: PEFT adapters made on the spot (PEFT is the merge
oracle), helpers that read an export back, run the CLI, and check DEST holds nothing
half-written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def make_adapter(base: Path, out: Path, *, seed: int = 1, resize_vocab: int | None = None, **lora: Any) -> Path:
    """A PEFT adapter for ``base`` saved at ``out``: lora_B initialised non-zero
    (``init_lora_weights=False``) so the merge really changes the weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    if resize_vocab:
        model.resize_token_embeddings(resize_vocab)
    lora.setdefault("init_lora_weights", False)
    peft_model = get_peft_model(model, LoraConfig(**lora))
    if lora.get("modules_to_save"):  # make the saved copies differ from the base, as training would
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "modules_to_save" in name:
                    p.add_(torch.randn_like(p) * 0.1)
    if lora.get("use_dora"):
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_magnitude_vector" in name:
                    p.mul_(1 + 0.1 * torch.randn_like(p))
    peft_model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def peft_merged(base: Path, adapter: Path, resize_vocab: int | None = None) -> dict[str, Any]:
    """PEFT's own merge: ``merge_and_unload().state_dict()``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    if resize_vocab:
        model.resize_token_embeddings(resize_vocab)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def read_export(dest: Path) -> dict[str, Any]:
    """Every tensor of an export, read with safetensors' own reader through the index."""
    from safetensors import safe_open

    index = json.loads((dest / "model.safetensors.index.json").read_text())
    out: dict[str, Any] = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(dest / shard), "pt") as f:
            for key in f.keys():
                assert index["weight_map"][key] == shard
                out[key] = f.get_tensor(key)
    assert set(out) == set(index["weight_map"])
    return out


def assert_matches(mine: dict[str, Any], oracle: dict[str, Any], *, tied: bool, atol: float = 1e-6, rtol: float = 0.0) -> None:
    import torch

    expected = dict(oracle)
    if tied:
        expected.pop("lm_head.weight", None)
    assert set(mine) == set(expected)
    for name, ref in expected.items():
        got = mine[name]
        assert got.shape == ref.shape, name
        assert torch.allclose(got.float(), ref.float(), atol=atol, rtol=rtol), (
            f"{name}: max diff {(got.float() - ref.float()).abs().max().item()}")


def interrupt_writes(monkeypatch: pytest.MonkeyPatch, at: int) -> list[str]:
    """Makes export's ``write_shard`` raise KeyboardInterrupt (Ctrl-C) on its ``at``-th
    call, writing the others; returns the names of the shards it was called for."""
    from tune2serve.components.export import export as export_module

    real = export_module.write_shard
    calls: list[str] = []

    def interrupted(path: Path, shard: Any, produce: Any, crc: bool = False, **options: Any) -> Any:
        calls.append(shard.name)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(path, shard, produce, crc, **options)

    monkeypatch.setattr(export_module, "write_shard", interrupted)
    return calls


def assert_nothing_published(dest: Path) -> None:
    """DEST does not exist, or holds no manifest and no file of ours."""
    if dest.exists():
        left = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*"))
        assert left == [], f"left at DEST: {left}"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, dict[str, Any] | None, str]]:
    """Runs ``tune2serve ARGS`` in-process; returns (exit code, --json object or None, stderr)."""
    from tune2serve.cli.main import main

    def run(*args: str) -> tuple[int, dict[str, Any] | None, str]:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = int(e.code or 0)
        captured = capsys.readouterr()
        text = captured.out.strip()
        return code, (json.loads(text) if text.startswith("{") else None), captured.err

    return run


@pytest.fixture
def validate_ok(cli: Callable[..., tuple[int, dict[str, Any] | None, str]]) -> Callable[[str | Path], dict[str, Any]]:
    """``tune2serve validate DEST --json`` must pass (exit 0, ok true)."""

    def check(dest: str | Path) -> dict[str, Any]:
        code, doc, err = cli("validate", dest, "--json")
        assert doc is not None, err
        errors = [f for f in doc["findings"] if f["severity"] == "error"]
        assert code == 0 and doc["ok"], errors
        return doc

    return check


@pytest.fixture(scope="session")
def tiny_llama_bf16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tune2serve.demo.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama-bf16", dtype="bfloat16")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """A GPT-2 (Conv1D layers, weights stored in×out) for fan_in_fan_out."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=384, n_positions=64,
                                       tie_word_embeddings=False))
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_llama / name, out / name)
    return out


class RunsShell:
    """Unpickling this runs ``touch MARKER`` through os.system: the payload a hostile
    ``.bin``/``.pt`` file carries. The marker existing afterwards means it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def hostile_pickle(path: Path, marker: Path, state: dict[str, Any] | None = None) -> Path:
    """``torch.save`` of ``state`` (real tensors, or a training-state dict) with a
    ``RunsShell`` payload beside them, as a tampered checkpoint file would hold."""
    import torch

    torch.save({**(state or {}), "payload": RunsShell(marker)}, path)
    return path
