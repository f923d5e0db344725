"""Pure pieces: sizes, shard plans, shard headers, config cleaning, layout discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tune2serve.components.checkpoint.storage import LocalFolder
from tune2serve.components.errors import CheckpointError, UsageError
from tune2serve.components.export.plan.config_clean import clean_config, generation_config_from
from tune2serve.components.export.source.layout import CheckpointChoice, discover
from tune2serve.components.export.publish.writer import OutTensor, parse_size, plan_shards, shard_header


@pytest.mark.parametrize("text, value", [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("100KB", 100_000),
                                         ("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000), ("4096", 4096)])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "5XB", "-1GB", "0"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--max-shard-size"):
        parse_size(text)


def test_plan_shards_packs_greedily_and_names_hf_style() -> None:
    tensors = [OutTensor(f"t{i}", "BF16", (10,)) for i in range(5)]  # 20 bytes each
    plans = plan_shards(tensors, 45)
    assert [p.name for p in plans] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert [[t.name for t in p.tensors] for p in plans] == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert [p.name for p in plan_shards([OutTensor("big", "F32", (100,))], 10)] == ["model-00001-of-00001.safetensors"]


def test_shard_header_is_what_safetensors_reads(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    a, b = torch.arange(6, dtype=torch.float32).reshape(2, 3), torch.tensor([1, 2], dtype=torch.int64)
    header = shard_header([OutTensor("a", "F32", (2, 3)), OutTensor("b", "I64", (2,))])
    assert len(header) % 8 == 0
    (tmp_path / "x.safetensors").write_bytes(header + a.numpy().tobytes() + b.numpy().tobytes())
    loaded = load_file(tmp_path / "x.safetensors")
    assert torch.equal(loaded["a"], a) and torch.equal(loaded["b"], b)


def test_clean_config() -> None:
    config = {"model_type": "llama", "_name_or_path": "/data/base", "use_cache": False, "gradient_checkpointing": True,
              "torch_dtype": "float32", "transformers_version": "4.40.0", "vocab_size": 384, "tie_word_embeddings": True,
              "eos_token_id": 2, "pad_token_id": 0, "bos_token_id": None}
    assert clean_config(config, dtype="bfloat16", vocab_size=400, tie_word_embeddings=False, version="5.0.0") == {
        "model_type": "llama", "use_cache": True, "torch_dtype": "bfloat16", "dtype": "bfloat16",
        "transformers_version": "5.0.0", "vocab_size": 400, "tie_word_embeddings": False,
        "eos_token_id": 2, "pad_token_id": 0, "bos_token_id": None}
    assert generation_config_from(config, "5.0.0") == {"eos_token_id": 2, "pad_token_id": 0, "transformers_version": "5.0.0"}


def test_clean_config_nested_text_config() -> None:
    config = {"model_type": "gemma3", "text_config": {"vocab_size": 10, "tie_word_embeddings": True}}
    assert clean_config(config, dtype="bfloat16", vocab_size=12, tie_word_embeddings=False) == {
        "model_type": "gemma3", "use_cache": True, "dtype": "bfloat16",
        "text_config": {"vocab_size": 12, "tie_word_embeddings": False}, "tie_word_embeddings": False}


def _tree(root: Path, files: list[str]) -> LocalFolder:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")
    return LocalFolder(root)


def test_discover_trainer_final_prefers_top_level_model(tmp_path: Path) -> None:
    folder = _tree(tmp_path, ["config.json", "model.safetensors", "checkpoint-5/config.json",
                              "checkpoint-5/model.safetensors", "checkpoint-5/optimizer.pt"])
    sel = discover(folder, CheckpointChoice.parse("final"))
    assert (sel.source_kind, sel.subdir, sel.is_adapter) == ("hf-trainer", "", False)
    assert discover(folder, CheckpointChoice.parse("latest")).subdir == "checkpoint-5"


def test_discover_model_garden_adapter(tmp_path: Path) -> None:
    folder = _tree(tmp_path, ["adapter/node-0/checkpoint-final/adapter_config.json",
                              "adapter/node-0/checkpoint-final/adapter_model.safetensors", "logs/train.log"])
    sel = discover(folder, CheckpointChoice.parse("final"))
    assert (sel.source_kind, sel.subdir, sel.is_adapter) == ("vertex-tuning", "adapter/node-0/checkpoint-final", True)


def test_discover_best_without_best_checkpoint(tmp_path: Path) -> None:
    folder = _tree(tmp_path, ["checkpoint-5/adapter_config.json", "checkpoint-5/adapter_model.safetensors"])
    (tmp_path / "trainer_state.json").write_text(json.dumps({"best_model_checkpoint": None}))
    with pytest.raises(CheckpointError, match="best_model_checkpoint is not set.*use --checkpoint latest"):
        discover(folder, CheckpointChoice.parse("best"))


def test_discover_step_on_single_checkpoint_is_usage_error(tmp_path: Path) -> None:
    folder = _tree(tmp_path, ["config.json", "model.safetensors"])
    with pytest.raises(UsageError, match="single checkpoint"):
        discover(folder, CheckpointChoice.parse("100"))
