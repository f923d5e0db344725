"""The streaming merge equals PEFT's ``merge_and_unload()``, option by option.

Each case makes a real adapter with PEFT on a tiny model (lora_B non-zero), exports it,
and compares every written tensor with PEFT's merged state dict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import assert_matches, make_adapter, peft_merged, read_export
from tune2serve.components.export.export import export_checkpoint

ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CASES: dict[str, dict[str, Any]] = {
    "plain": dict(r=4, lora_alpha=8, target_modules=ALL_PROJ),
    "rslora": dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj"]),
    "rank_alpha_pattern": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                               rank_pattern={"v_proj": 2, "layers.1.mlp.down_proj": 6},
                               alpha_pattern={"layers.0.self_attn.q_proj": 3}),
    "modules_to_save": dict(r=4, lora_alpha=16, target_modules=["q_proj"], modules_to_save=["lm_head"]),
    "embedding": dict(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"]),
    "dora": dict(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "down_proj"]),
    "dora_embedding": dict(r=4, lora_alpha=8, use_dora=True, target_modules=["embed_tokens", "o_proj"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_merge_equals_peft_float32(case: str, tiny_llama: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", **CASES[case])
    result = export_checkpoint(str(adapter), str(tmp_path / "out"), max_shard_size="100KB")
    assert result.source_kind == "peft-adapter" and result.merge is not None
    assert result.merge["use_dora"] == bool(CASES[case].get("use_dora"))
    assert_matches(read_export(tmp_path / "out"), peft_merged(tiny_llama, adapter), tied=False)


def test_merge_equals_peft_within_bf16_rounding(tiny_llama_bf16: Path, tmp_path: Path) -> None:
    """bf16 base: we add in float32 and round once; PEFT rounds ΔW then adds in bf16.
    The two agree to within bf16 rounding of the result (2 ulp, relative 2⁻⁷)."""
    adapter = make_adapter(tiny_llama_bf16, tmp_path / "adapter", r=8, lora_alpha=16, use_dora=True,
                           target_modules=ALL_PROJ)
    export_checkpoint(str(adapter), str(tmp_path / "out"))
    mine = read_export(tmp_path / "out")
    oracle = peft_merged(tiny_llama_bf16, adapter)
    assert {str(t.dtype) for t in mine.values()} == {"torch.bfloat16"}
    assert_matches(mine, oracle, tied=False, atol=1e-3, rtol=2 ** -7)


def test_fan_in_fan_out_gpt2_conv1d(tiny_gpt2: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_gpt2, tmp_path / "adapter", r=4, lora_alpha=8, fan_in_fan_out=True,
                           target_modules=["c_attn", "c_proj", "c_fc"])
    assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    export_checkpoint(str(adapter), str(tmp_path / "out"))
    oracle = peft_merged(tiny_gpt2, adapter)
    oracle = {k: v for k, v in oracle.items() if not k.endswith(".attn.bias") and not k.endswith(".masked_bias")}
    mine = read_export(tmp_path / "out")
    assert_matches({k: v for k, v in mine.items() if k in oracle}, oracle, tied=False)


def test_dora_on_conv1d_with_fan_in_fan_out(tiny_gpt2: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_gpt2, tmp_path / "adapter", r=4, lora_alpha=8, fan_in_fan_out=True, use_dora=True,
                           target_modules=["c_attn"])
    export_checkpoint(str(adapter), str(tmp_path / "out"))
    oracle = peft_merged(tiny_gpt2, adapter)
    mine = read_export(tmp_path / "out")
    assert_matches({k: v for k, v in mine.items() if k in oracle}, {k: v for k, v in oracle.items() if k in mine}, tied=False)


def test_tied_base_with_trained_lm_head_is_untied(tiny_qwen_sharded: Path, tmp_path: Path) -> None:
    """modules_to_save=[lm_head] on a tied model: PEFT's merged model has its own
    lm_head; the export must write it and say tie_word_embeddings=false, or a server
    would tie lm_head back to the embedding and lose the trained head."""
    adapter = make_adapter(tiny_qwen_sharded, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"],
                           modules_to_save=["lm_head"])
    result = export_checkpoint(str(adapter), str(tmp_path / "out"), max_shard_size="100KB")
    oracle = peft_merged(tiny_qwen_sharded, adapter)
    mine = read_export(tmp_path / "out")
    assert "lm_head.weight" in mine
    assert_matches(mine, oracle, tied=False)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["vocab_size"] == mine["model.embed_tokens.weight"].shape[0]
    assert any("unties" in n for n in result.notes)


def test_tied_base_with_embedding_lora_is_untied(tiny_qwen_sharded: Path, tmp_path: Path) -> None:
    """PEFT merges the embedding's update into the one tied tensor, so its merge also
    changes the output layer, which kept the base weight in training. The export writes
    PEFT's merged embedding and the base weight as lm_head (test_producers.py compares
    the logits with the trained model)."""
    adapter = make_adapter(tiny_qwen_sharded, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["embed_tokens"])
    export_checkpoint(str(adapter), str(tmp_path / "out"), max_shard_size="100KB")
    oracle = peft_merged(tiny_qwen_sharded, adapter)
    mine = read_export(tmp_path / "out")
    base = read_export(tiny_qwen_sharded)  # a sharded folder with an index, read the same way
    assert (mine["lm_head.weight"] == base["model.embed_tokens.weight"]).all()
    assert_matches({k: v for k, v in mine.items() if k != "lm_head.weight"}, oracle, tied=True)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is False


def test_resized_vocabulary_sets_vocab_size_and_loads(tiny_llama: Path, tmp_path: Path, validate_ok: Any) -> None:
    """An adapter trained after resize_token_embeddings(400) saves both resized tables;
    the export's config must say vocab_size=400, and transformers must load it."""
    import torch
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tiny_llama, tmp_path / "adapter", resize_vocab=400, r=4, lora_alpha=8,
                           target_modules=["q_proj"], modules_to_save=["embed_tokens", "lm_head"])
    export_checkpoint(str(adapter), str(tmp_path / "out"))
    mine = read_export(tmp_path / "out")
    assert_matches(mine, peft_merged(tiny_llama, adapter, resize_vocab=400), tied=False)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vocab_size"] == 400 and mine["lm_head.weight"].shape[0] == 400
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.get_output_embeddings().weight.shape[0] == 400
    assert torch.equal(model.get_output_embeddings().weight, mine["lm_head.weight"])


def test_adapter_resizing_only_the_embedding_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    """PEFT saves both resized tables; an adapter file holding only the resized
    embedding (hand-edited, or from another tool) would make lm_head disagree."""
    from safetensors.torch import load_file, save_file

    from tune2serve.components.errors import MergeError

    adapter = make_adapter(tiny_llama, tmp_path / "adapter", resize_vocab=400, r=4, lora_alpha=8,
                           target_modules=["q_proj"], modules_to_save=["embed_tokens"])
    path = adapter / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(path).items() if "lm_head" not in k}, path)
    with pytest.raises(MergeError, match=r"model.embed_tokens.weight has 400 rows but lm_head.weight has 384"):
        export_checkpoint(str(adapter), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
