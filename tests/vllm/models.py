"""Tiny models of every supported architecture, at a head size vLLM's CPU attention runs
(64; 16 reports healthy and fails its first request), exported by tune2serve twice: as a
full fine-tune (the checkpoint itself) and as a LoRA merge (a PEFT adapter with every
linear layer targeted, merged by export).

A random tiny model has near-ties everywhere (logits of a 0.02-std head are all about
zero), so the output layer is scaled up (``HEAD_SCALE``) until most steps have a clear
winner: the parity rule compares tokens only where the reference's top-two margin is
clear, and a check that compares nothing cannot fail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

HEAD_DIM = 64
BASE: dict[str, Any] = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "num_key_value_heads": 1, "head_dim": HEAD_DIM, "vocab_size": 384, "max_position_embeddings": 512,
                        "pad_token_id": 0, "bos_token_id": None, "eos_token_id": 2, "tie_word_embeddings": False}
MOE = {"num_experts_per_tok": 2}
_VISION_GEMMA = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 1,
                 "image_size": 28, "patch_size": 14}
_VISION_LLAMA4 = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 1,
                  "image_size": 28, "patch_size": 14, "vision_output_dim": 64, "projector_input_dim": 64,
                  "projector_output_dim": 128, "pixel_shuffle_ratio": 0.5}
_NO_HEAD_DIM = {k: v for k, v in BASE.items() if k != "head_dim"}  # DeepSeek's MLA: head sizes of its own
HEAD_SCALE = 20.0  # output-layer std 0.4: logits spread over several units, so most greedy steps are clear

# key → (transformers class, config kwargs). One per class of supported_models.json.
SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaForCausalLM", BASE),
    "mistral": ("MistralForCausalLM", BASE),
    "qwen2": ("Qwen2ForCausalLM", {**BASE, "tie_word_embeddings": True}),
    "qwen3": ("Qwen3ForCausalLM", BASE),
    "phi3": ("Phi3ForCausalLM", BASE),
    "gemma2": ("Gemma2ForCausalLM", {**BASE, "tie_word_embeddings": True, "query_pre_attn_scalar": HEAD_DIM}),
    "gemma3_text": ("Gemma3ForCausalLM", {**BASE, "tie_word_embeddings": True, "query_pre_attn_scalar": HEAD_DIM,
                                          "sliding_window": 64}),
    "gemma3": ("Gemma3ForConditionalGeneration", {"text_config": {**BASE, "query_pre_attn_scalar": HEAD_DIM,
                                                                  "sliding_window": 64},
                                                  "vision_config": _VISION_GEMMA, "mm_tokens_per_image": 4,
                                                  "tie_word_embeddings": True}),
    "mixtral": ("MixtralForCausalLM", {**BASE, **MOE, "num_local_experts": 4}),
    "qwen3_moe": ("Qwen3MoeForCausalLM", {**BASE, **MOE, "num_experts": 4, "moe_intermediate_size": 64}),
    "qwen3_next": ("Qwen3NextForCausalLM", {**BASE, **MOE, "num_experts": 4, "moe_intermediate_size": 64,
                                            "shared_expert_intermediate_size": 128, "linear_num_key_heads": 2,
                                            "linear_num_value_heads": 2, "linear_key_head_dim": 64,
                                            "linear_value_head_dim": 64, "num_hidden_layers": 4}),
    "deepseek_v3": ("DeepseekV3ForCausalLM", {**_NO_HEAD_DIM, **MOE, "num_key_value_heads": 2, "n_routed_experts": 4,
                                              "moe_intermediate_size": 64, "n_shared_experts": 1,
                                              # MLA's latent cache kv_lora_rank + qk_rope_head_dim = 576, as
                                              # published: the only size vLLM's CPU MLA kernel is built for
                                              "first_k_dense_replace": 1, "q_lora_rank": 64, "kv_lora_rank": 512,
                                              "qk_nope_head_dim": 32, "qk_rope_head_dim": 64, "v_head_dim": 64,
                                              "n_group": 1, "topk_group": 1,
                                              # as published; vLLM needs both (validate says so)
                                              "topk_method": "noaux_tc", "scoring_func": "sigmoid"}),
    "gpt_oss": ("GptOssForCausalLM", {**BASE, **MOE, "num_local_experts": 4, "sliding_window": 64}),
    "llama4": ("Llama4ForConditionalGeneration", {"text_config": {**BASE, **MOE, "num_local_experts": 4,
                                                                  "intermediate_size_mlp": 256,
                                                                  "interleave_moe_layer_step": 2},
                                                  "vision_config": _VISION_LLAMA4}),
}
MULTIMODAL = {"gemma3", "llama4"}
# PEFT's all-linear cannot wrap Llama-4's router (tests/export/test_architectures.py): attention only
LORA_TARGETS: dict[str, Any] = {"llama4": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def build_base(key: str, out: Path, tokenizer_from: Path, *, seed: int = 0) -> Any:
    """A random tiny model of ``key`` saved with save_pretrained (its on-disk names, its
    config as transformers writes it) plus the demo tokenizer and chat template."""
    import torch
    import transformers

    class_name, kwargs = SPECS[key]
    cls = getattr(transformers, class_name)
    torch.manual_seed(seed)
    model = cls(cls.config_class(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():  # some classes start norms/biases at exactly 0 or 1: make every tensor matter
            p.add_(torch.randn_like(p) * 0.02)
        model.get_output_embeddings().weight.mul_(HEAD_SCALE)
    model.generation_config = transformers.GenerationConfig(eos_token_id=2, pad_token_id=0)
    model.save_pretrained(out)
    copy_tokenizer(tokenizer_from, out)
    return model


def copy_tokenizer(src: Path, dst: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)


def make_tokenizer(out: Path) -> Path:
    """The demo's trained BPE tokenizer (384 ids; <|endoftext|> 0, <|im_start|> 1, <|im_end|> 2)."""
    from tune2serve.demo.tiny_models import train_tokenizer

    train_tokenizer(out, 384)
    return out


def export_full(base: Path, out: Path) -> Path:
    """The base folder exported as a full fine-tune, in bf16 (what a trainer saves and vLLM serves)."""
    from tune2serve.components.export.export import export_checkpoint

    export_checkpoint(str(base), str(out), dtype="bfloat16")
    return out


def export_lora(key: str, base: Path, model: Any, work: Path, out: Path) -> Path:
    """A PEFT adapter on ``model`` (random, non-zero: init_lora_weights=False) merged by export."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                  target_modules=LORA_TARGETS.get(key, "all-linear")))
    adapter = work / f"{key}-adapter"
    peft_model.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    copy_tokenizer(base, adapter)
    from tune2serve.components.export.export import export_checkpoint

    export_checkpoint(str(adapter), str(out), dtype="bfloat16")
    return out
