"""LoRA merge on a tiny random model of every supported class, PEFT as the oracle.

Each class is built small (``tests/validate/meta_layouts.TINY``), saved with
``save_pretrained`` (its on-disk names), given a PEFT adapter with
``target_modules="all-linear"`` and ``init_lora_weights=False``, exported, and compared
with PEFT's ``merge_and_unload()`` (renamed to the on-disk names by transformers'
``revert_weight_conversion``, as ``save_pretrained`` would) tensor by tensor, then
loaded with transformers: its logits equal the unmerged PEFT model's. On the MoE classes
PEFT's "all-linear" becomes parameter-level LoRA on the fused experts
(``target_parameters``), merged by ``export/merge/moe.py``; gpt-oss and Llama-4 experts are
tested with ``target_parameters`` given by hand, with oblong and square (gpt-oss's
published 2880 × 2880 ``down_proj``) expert matrices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import read_export
from tests.validate.meta_layouts import BASE
from tune2serve.components.export.export import export_checkpoint

VOCAB = 384  # the tiny tokenizer's
IDS = [[5, 17, 33, 2, 99, 150, 7, 64]]
_VISION_GEMMA = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                 "image_size": 28, "patch_size": 14}
_VISION_LLAMA4 = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                  "image_size": 28, "patch_size": 14, "vision_output_dim": 32, "projector_input_dim": 32,
                  "projector_output_dim": 32, "pixel_shuffle_ratio": 0.5}
TEXT = {**BASE, "vocab_size": VOCAB}
MOE = {"num_experts_per_tok": 2}
LINEAR_ONLY = ("not run: PEFT 0.21 wraps Llama-4's router (an `nn.Linear` whose forward returns a tuple) in "
               "`lora.Linear`, whose forward then fails")
FUSED_EXPERTS_ALL_LINEAR = {"MixtralForCausalLM", "Qwen3MoeForCausalLM", "Qwen3NextForCausalLM", "DeepseekV3ForCausalLM"}

# class → (config kwargs, "merged": PEFT's target_modules="all-linear" adapter is compared, or
# LINEAR_ONLY: all-linear is not run (PEFT's own forward fails) and a LoRA on every nn.Linear but
# the router is)
ARCHITECTURES: dict[str, tuple[dict[str, Any], str]] = {
    "LlamaForCausalLM": (TEXT, "merged"),
    "MistralForCausalLM": ({**TEXT, "head_dim": 24}, "merged"),
    "Qwen2ForCausalLM": (TEXT, "merged"),
    "Qwen3ForCausalLM": ({**TEXT, "head_dim": 16}, "merged"),
    "Phi3ForCausalLM": (TEXT, "merged"),
    "Gemma2ForCausalLM": ({**TEXT, "head_dim": 16}, "merged"),
    "Gemma3ForCausalLM": ({**TEXT, "head_dim": 16}, "merged"),
    "Gemma3ForConditionalGeneration": ({"text_config": {**TEXT, "head_dim": 16}, "vision_config": _VISION_GEMMA,
                                        "mm_tokens_per_image": 4}, "merged"),
    "MixtralForCausalLM": ({**TEXT, **MOE, "num_local_experts": 3}, "merged"),
    "Qwen3MoeForCausalLM": ({**TEXT, **MOE, "num_experts": 3, "moe_intermediate_size": 24, "head_dim": 16}, "merged"),
    "Qwen3NextForCausalLM": ({**TEXT, **MOE, "num_experts": 3, "moe_intermediate_size": 24, "head_dim": 16,
                              "shared_expert_intermediate_size": 40, "linear_num_key_heads": 2,
                              "linear_num_value_heads": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
                              "num_hidden_layers": 4}, "merged"),
    "DeepseekV3ForCausalLM": ({**TEXT, **MOE, "num_key_value_heads": 4, "n_routed_experts": 3, "moe_intermediate_size": 24,
                               "n_shared_experts": 1, "first_k_dense_replace": 1, "q_lora_rank": 24,
                               "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8,
                               "n_group": 1, "topk_group": 1}, "merged"),
    "GptOssForCausalLM": ({**TEXT, **MOE, "num_local_experts": 3, "head_dim": 16}, "merged"),
    "Llama4ForConditionalGeneration": ({"text_config": {**TEXT, **MOE, "num_local_experts": 3, "head_dim": 16,
                                                        "intermediate_size_mlp": 80, "interleave_moe_layer_step": 2},
                                        "vision_config": _VISION_LLAMA4}, LINEAR_ONLY),
}


def _logits(model: Any) -> Any:
    """Text logits. Llama-4's multimodal forward fails without images in transformers
    5.24 (no ``image_outputs``), so its language model (Llama4ForCausalLM) is called directly
    (with PEFT, the LoRA layers sit inside them all the same)."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.no_grad():
        if type(inner).__name__ == "Llama4ForConditionalGeneration":
            return inner.language_model(input_ids=torch.tensor(IDS)).logits.float()
        return model(input_ids=torch.tensor(IDS)).logits.float()


def _build(class_name: str, kwargs: dict[str, Any], folder: Path, tokenizer_from: Path) -> Any:
    import torch
    import transformers

    cls = getattr(transformers, class_name)
    torch.manual_seed(0)
    config = cls.config_class(**kwargs)
    model = cls(config).eval()
    with torch.no_grad():  # some classes start norms/biases at exactly 0 or 1: make every tensor matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tokenizer_from / name).exists():
            shutil.copy(tokenizer_from / name, folder / name)
    return model


def _adapter(base_dir: Path, model: Any, out: Path, **lora: Any) -> tuple[Any, Path]:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **lora))
    peft_model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base_dir)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return peft_model, out


def _linear_modules(model: Any, attention_only: bool) -> str:
    """Every nn.Linear but the output layer (of the attention only, for MoE classes:
    PEFT turns MLP names there into target_parameters), by full name (a regex PEFT
    full-matches)."""
    import re

    import torch

    names = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                   and not n.endswith(("lm_head", ".router"))  # Llama-4's router returns a tuple: PEFT cannot wrap it
                   and not (attention_only and (".mlp." in n or ".feed_forward." in n)))
    return "|".join(re.escape(n) for n in names)


def _compare(class_name: str, kwargs: dict[str, Any], tmp_path: Path, tiny_llama: Path, **lora: Any) -> dict[str, Any]:
    """Adapter made with ``lora`` on a fresh tiny model: export == PEFT's merge, logits ==
    the trained model's. Returns the adapter config."""
    import torch
    from tune2serve.components.export.plan.weight_conversion import revert_weight_conversion

    base_dir = tmp_path / "base"
    model = _build(class_name, kwargs, base_dir, tiny_llama)
    peft_model, adapter = _adapter(base_dir, model, tmp_path / "adapter", **lora)
    trained = _logits(peft_model)
    export_checkpoint(str(adapter), str(tmp_path / "out"))
    merged_model = peft_model.merge_and_unload()
    oracle = revert_weight_conversion(merged_model, dict(merged_model.state_dict()))
    mine = read_export(tmp_path / "out")
    tied = merged_model.config.get_text_config().tie_word_embeddings
    assert set(mine) == {n for n in oracle if not (tied and n.endswith("lm_head.weight"))}
    for name, got in mine.items():
        ref = oracle[name]
        assert got.shape == ref.shape and got.dtype == ref.dtype, name
        assert torch.allclose(got, ref, atol=1e-6, rtol=0), f"{name}: {(got - ref).abs().max().item()}"
    exported = type(model).from_pretrained(tmp_path / "out").eval()
    assert torch.allclose(_logits(exported), trained, atol=1e-4)
    return json.loads((adapter / "adapter_config.json").read_text())


@pytest.mark.parametrize("class_name", sorted(ARCHITECTURES))
def test_lora_merge_equals_peft(class_name: str, tiny_llama: Path, tmp_path: Path) -> None:
    kwargs, expected = ARCHITECTURES[class_name]
    targets = "all-linear" if expected == "merged" else \
        _linear_modules(_build(class_name, kwargs, tmp_path / "probe", tiny_llama), attention_only=False)
    cfg = _compare(class_name, kwargs, tmp_path, tiny_llama, target_modules=targets)
    # PEFT turns "all-linear" on fused experts into parameter-level LoRA: that path is exercised
    assert bool(cfg.get("target_parameters")) == (class_name in FUSED_EXPERTS_ALL_LINEAR)


# PEFT target_parameters given by hand (its documented way for gpt-oss and Llama-4 experts)
TARGET_PARAMETERS = {
    "GptOssForCausalLM": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
    "Llama4ForConditionalGeneration": ["feed_forward.experts.gate_up_proj", "feed_forward.experts.down_proj"],
}


def _square_experts(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The config with expert intermediate size = hidden size, as gpt-oss's published one
    (2880): down_proj is [E, H, H], so only the module's orientation (PEFT reads
    ``is_transposed``) tells how its LoRA applies."""
    if "text_config" in kwargs:
        return {**kwargs, "text_config": _square_experts(kwargs["text_config"])}
    return {**kwargs, "intermediate_size": kwargs["hidden_size"]}


@pytest.mark.parametrize("square", [False, True], ids=["oblong", "square"])
@pytest.mark.parametrize("class_name", sorted(TARGET_PARAMETERS))
def test_target_parameters_merge_equals_peft(class_name: str, square: bool, tiny_llama: Path, tmp_path: Path) -> None:
    kwargs, _ = ARCHITECTURES[class_name]
    kwargs = _square_experts(kwargs) if square else kwargs
    cfg = _compare(class_name, kwargs, tmp_path, tiny_llama, target_modules=["q_proj", "v_proj"],
                   target_parameters=TARGET_PARAMETERS[class_name])
    assert cfg["target_parameters"]
    downs = [t.shape for n, t in read_export(tmp_path / "out").items() if n.endswith("experts.down_proj")]
    assert downs and all((s[1] == s[2]) == square for s in downs)


def test_llama4_all_linear_fails_in_peft_itself(tiny_llama: Path, tmp_path: Path) -> None:
    """Why Llama-4 is LINEAR_ONLY: PEFT's "all-linear" wraps its router and PEFT's own
    forward fails. When a PEFT release fixes that, this fails: mark Llama-4 "merged"."""
    from peft import LoraConfig, get_peft_model

    kwargs, expected = ARCHITECTURES["Llama4ForConditionalGeneration"]
    assert expected == LINEAR_ONLY
    model = _build("Llama4ForConditionalGeneration", kwargs, tmp_path / "base", tiny_llama)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    assert type(peft_model.get_submodule("base_model.model.language_model.model.layers.1.feed_forward.router")
                ).__module__ == "peft.tuners.lora.layer"
    with pytest.raises(AttributeError, match="'tuple' object has no attribute 'dtype'"):
        _logits(peft_model)
    assert not peft_model.peft_config["default"].target_parameters  # all-linear leaves its experts alone
