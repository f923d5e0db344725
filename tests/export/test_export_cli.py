"""``tune2serve export`` end to end on tiny real checkpoints: every input kind, the
--json contract, validation of the result, reruns (no-op, resume) and the published
folder's content."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import interrupt_writes, make_adapter, read_export
from tune2serve.components.checkpoint.manifest import sha256_file

Cli = Callable[..., tuple[int, "dict[str, Any] | None", str]]


def _trainer_output(tiny_llama: Path, root: Path) -> Path:
    """An HF Trainer output dir of a LoRA run: two checkpoints with training state, the
    tokenizer (with its own chat template) at the top, and trainer_state.json naming
    checkpoint-10 as the best."""
    for step, seed in ((10, 1), (20, 2)):
        ckpt = make_adapter(tiny_llama, root / f"checkpoint-{step}", seed=seed, r=4, lora_alpha=8, target_modules=["q_proj"])
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
            (ckpt / name).write_bytes(b"training state")
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    for name in ("tokenizer.json", "special_tokens_map.json"):
        shutil.copy(tiny_llama / name, root / name)
    tok = json.loads((tiny_llama / "tokenizer_config.json").read_text())
    tok["chat_template"] = "{{ 'tuned template' }}"
    (root / "tokenizer_config.json").write_text(json.dumps(tok))
    (root / "trainer_state.json").write_text(json.dumps({"best_model_checkpoint": "/train/out/checkpoint-10"}))
    return root


def test_full_checkpoint_exports_validates_and_generates(tiny_llama: Path, tmp_path: Path, cli: Cli, validate_ok: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    dest = tmp_path / "export"
    code, doc, err = cli("export", tiny_llama, dest, "--json", "--max-shard-size", "200KB")
    assert code == 0, err
    assert doc["ok"] and doc["noop"] is False and doc["source_kind"] == "full-checkpoint"
    assert "full model weights" in doc["explanation"]
    assert doc["dtype"] == "float32" and doc["parameter_count"] > 100_000
    names = {f["name"] for f in doc["files"]}
    shards = sorted(n for n in names if n.endswith(".safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert sorted(p.name for p in dest.iterdir()) == sorted(names | {"manifest.json"})
    for f in doc["files"]:
        assert (dest / f["name"]).stat().st_size == f["size"] and sha256_file(dest / f["name"]) == f["sha256"]
    assert doc["bytes"] == sum(f["size"] for f in doc["files"])
    validate_ok(dest)
    original = AutoModelForCausalLM.from_pretrained(tiny_llama)
    exported = AutoModelForCausalLM.from_pretrained(dest)
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, exported.state_dict()[name]), name
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(original.generate(ids, max_new_tokens=4, do_sample=False),
                       exported.generate(ids, max_new_tokens=4, do_sample=False))


def test_sharded_tied_checkpoint_keeps_tying_and_casts_dtype(tiny_qwen_sharded: Path, tmp_path: Path, cli: Cli,
                                                               validate_ok: Any) -> None:
    dest = tmp_path / "export"
    code, doc, err = cli("export", tiny_qwen_sharded, dest, "--json", "--dtype", "bfloat16", "--max-shard-size", "100KB")
    assert code == 0, err
    tensors = read_export(dest)
    assert "lm_head.weight" not in tensors and {str(t.dtype) for t in tensors.values()} == {"torch.bfloat16"}
    config = json.loads((dest / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["dtype"] == "bfloat16"
    for f in doc["files"]:
        if f["name"].endswith(".safetensors"):
            # A shard holds at most 100 KB of tensor data (plus its header).
            header = int.from_bytes((dest / f["name"]).read_bytes()[:8], "little")
            assert f["size"] - 8 - header <= 100_000
    validate_ok(dest)


def test_bin_checkpoint_is_converted_to_safetensors(tiny_llama_bin: Path, tmp_path: Path, cli: Cli, validate_ok: Any) -> None:
    import torch

    dest = tmp_path / "export"
    code, doc, err = cli("export", tiny_llama_bin, dest, "--json")
    assert code == 0, err
    assert not any(f["name"].endswith(".bin") for f in doc["files"])
    original = torch.load(tiny_llama_bin / "pytorch_model.bin", weights_only=True)
    exported = read_export(dest)
    assert set(exported) == set(original)
    assert all(torch.equal(exported[k], v) for k, v in original.items())
    validate_ok(dest)


def test_trainer_output_choices_and_carried_files(tiny_llama: Path, tmp_path: Path, cli: Cli, validate_ok: Any) -> None:
    run = _trainer_output(tiny_llama, tmp_path / "run")
    code, doc, err = cli("export", run, tmp_path / "latest", "--json")
    assert code == 0, err
    assert doc["source_kind"] == "hf-trainer" and "checkpoint-20" in doc["explanation"] and "latest" in doc["explanation"]
    names = {f["name"] for f in doc["files"]}
    assert not names & {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json",
                        "adapter_config.json", "adapter_model.safetensors"}
    tok = json.loads((tmp_path / "latest" / "tokenizer_config.json").read_text())
    assert tok["chat_template"] == "{{ 'tuned template' }}"  # from the tuned run, not the base
    validate_ok(tmp_path / "latest")

    code, best, err = cli("export", run, tmp_path / "best", "--checkpoint", "best", "--json")
    assert code == 0, err
    assert "checkpoint-10" in best["explanation"] and "best_model_checkpoint" in best["explanation"]
    code, step, err = cli("export", run, tmp_path / "step", "--checkpoint", "10", "--json")
    assert code == 0 and step["files"] == best["files"]
    assert best["files"] != doc["files"]
    code, _, err = cli("export", run, tmp_path / "nope", "--checkpoint", "30")
    assert code == 2 and "no checkpoint-30; the steps saved are [10, 20]" in err


def test_vertex_tuning_tree_picks_postprocessed_final(tiny_llama: Path, tmp_path: Path, cli: Cli) -> None:
    tree = tmp_path / "tuning-output"
    shutil.copytree(tiny_llama, tree / "postprocess" / "node-0" / "checkpoints" / "final")
    shutil.copytree(tiny_llama, tree / "node-0" / "checkpoints" / "5")
    code, doc, err = cli("export", tree, tmp_path / "export", "--json")
    assert code == 0, err
    assert doc["source_kind"] == "vertex-tuning"
    assert "postprocess/node-0/checkpoints/final" in doc["explanation"] and "node-0/checkpoints/5" in doc["explanation"]


def test_model_garden_adapter_tree_with_base_model(tiny_llama: Path, tmp_path: Path, cli: Cli, validate_ok: Any) -> None:
    tree = tmp_path / "notebook-output"
    adapter = make_adapter(tiny_llama, tree / "adapter" / "node-0" / "checkpoint-final", r=4, lora_alpha=8,
                           target_modules=["v_proj"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "meta-llama/Llama-3.2-1B"  # a hub id: cannot be opened here
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    code, doc, err = cli("export", tree, tmp_path / "no-base", "--json")
    assert code == 1 and "pass --base-model" in err and not (tmp_path / "no-base").exists()
    code, doc, err = cli("export", tree, tmp_path / "export", "--base-model", tiny_llama, "--json")
    assert code == 0, err
    assert doc["source_kind"] == "vertex-tuning" and doc["base_model"] == str(tiny_llama)
    assert doc["merge"]["r"] == 4
    validate_ok(tmp_path / "export")


def test_rerun_is_noop_and_other_export_is_refused(tiny_llama: Path, tiny_llama_bin: Path, tmp_path: Path, cli: Cli) -> None:
    dest = tmp_path / "export"
    code, first, _ = cli("export", tiny_llama, dest, "--json")
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    code, again, err = cli("export", tiny_llama, dest, "--json")
    assert code == 0 and again["noop"] is True and again["files"] == first["files"]
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before
    code, doc, err = cli("export", tiny_llama, dest, "--json", "--dtype", "bfloat16")
    assert code == 1 and doc == {"ok": False, "dest": str(dest), "files": [], "error": doc["error"]}
    assert "already holds a different export" in err and "choose another DEST or delete" in err
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before


def test_interrupted_export_resumes_with_the_shards_already_written(tiny_llama: Path, tmp_path: Path, cli: Cli,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tune2serve.components.export import export as export_module

    real = export_module.write_shard
    calls = interrupt_writes(monkeypatch, at=3)
    dest = tmp_path / "export"
    monkeypatch.setattr(export_module, "_shard_writers", lambda *a: 1)  # in order (side by side: test_shard_writers.py)
    code, _, err = cli("export", tiny_llama, dest, "--max-shard-size", "100KB")
    assert code == 130 and not (dest / "manifest.json").exists()
    assert sorted(p.name for p in (dest / "_staging").iterdir()) == [calls[0], calls[1], "state.json"]

    calls.clear()
    monkeypatch.setattr(export_module, "write_shard", lambda *a, **k: (calls.append(a[1].name), real(*a, **k))[1])
    code, doc, err = cli("export", tiny_llama, dest, "--max-shard-size", "100KB", "--json")
    assert code == 0, err
    shards = sorted(f["name"] for f in doc["files"] if f["name"].endswith(".safetensors"))
    assert calls == shards[2:]  # the first two were reused
    assert not (dest / "_staging").exists()
    clean = tmp_path / "clean"
    code, fresh, _ = cli("export", tiny_llama, clean, "--max-shard-size", "100KB", "--json")
    assert [(f["name"], f["sha256"]) for f in fresh["files"]] == [(f["name"], f["sha256"]) for f in doc["files"]]


def test_config_is_cleaned(tiny_llama: Path, tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "trained"
    shutil.copytree(tiny_llama, src)
    config = json.loads((src / "config.json").read_text())
    config.update(use_cache=False, _name_or_path="/home/trainer/base", gradient_checkpointing=True,
                  transformers_version="4.40.0")
    (src / "config.json").write_text(json.dumps(config))
    (src / "generation_config.json").unlink()
    code, _, err = cli("export", src, tmp_path / "export", "--dtype", "float16")
    assert code == 0, err
    out = json.loads((tmp_path / "export" / "config.json").read_text())
    assert out["use_cache"] is True and out["dtype"] == "float16"
    assert "_name_or_path" not in out and "gradient_checkpointing" not in out and "quantization_config" not in out
    assert out["transformers_version"] != "4.40.0"
    gen = json.loads((tmp_path / "export" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == config["eos_token_id"] and gen["pad_token_id"] == config["pad_token_id"]
