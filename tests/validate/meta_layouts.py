"""On-disk tensor layouts straight from transformers: the model class built on the meta
device (no memory, no weights) and its state dict passed through transformers' own
``revert_weight_conversion`` — the names ``save_pretrained`` writes. Cached per session:
the published configs of the supported models take a few seconds each to build."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

TINY: dict[str, tuple[str, dict[str, Any]]] = {
    # model_type: (class name, config) — a tiny random model of each supported class
    "llama": ("LlamaForCausalLM", {}),
    "mistral": ("MistralForCausalLM", {"head_dim": 24}),
    "qwen2": ("Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": 16}),
    "phi3": ("Phi3ForCausalLM", {}),
    "gemma2": ("Gemma2ForCausalLM", {"head_dim": 16}),
    "gemma3_text": ("Gemma3ForCausalLM", {"head_dim": 16}),
    "mixtral": ("MixtralForCausalLM", {"num_local_experts": 3}),
    "qwen3_moe": ("Qwen3MoeForCausalLM", {"num_experts": 3, "moe_intermediate_size": 24, "head_dim": 16,
                                          "decoder_sparse_step": 2, "num_hidden_layers": 4}),
    "qwen3_next": ("Qwen3NextForCausalLM", {"num_experts": 3, "moe_intermediate_size": 24, "head_dim": 16,
                                            "shared_expert_intermediate_size": 40, "linear_num_key_heads": 2,
                                            "linear_num_value_heads": 4, "linear_key_head_dim": 8,
                                            "linear_value_head_dim": 8, "num_hidden_layers": 4}),
    "deepseek_v3": ("DeepseekV3ForCausalLM", {"n_routed_experts": 3, "moe_intermediate_size": 24, "n_shared_experts": 2,
                                              "first_k_dense_replace": 1, "q_lora_rank": 24, "kv_lora_rank": 16,
                                              "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8,
                                              "n_group": 1, "topk_group": 1, "num_experts_per_tok": 2}),
    "deepseek_v3_noq": ("DeepseekV3ForCausalLM", {"n_routed_experts": 2, "moe_intermediate_size": 24,
                                                  "n_shared_experts": 1, "first_k_dense_replace": 0, "q_lora_rank": None,
                                                  "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4,
                                                  "v_head_dim": 8, "n_group": 1, "topk_group": 1,
                                                  "num_experts_per_tok": 1, "model_type": "deepseek_v3"}),
    "gpt_oss": ("GptOssForCausalLM", {"num_local_experts": 3, "head_dim": 16, "num_experts_per_tok": 2}),
    "llama4_text": ("Llama4ForCausalLM", {"num_local_experts": 3, "head_dim": 16, "intermediate_size_mlp": 80,
                                          "interleave_moe_layer_step": 2, "num_hidden_layers": 4}),
}
BASE = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 128, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}


def tiny_config(key: str) -> dict[str, Any]:
    cls, extra = TINY[key]
    cfg = {**BASE, **extra}
    cfg.setdefault("model_type", key)
    return cfg


@lru_cache(maxsize=None)
def _layout_cached(class_name: str, config_json: str) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    import json

    import torch
    import transformers
    from tune2serve.components.export.plan.weight_conversion import revert_weight_conversion

    cfg = json.loads(config_json)
    model_cls = getattr(transformers, class_name)
    config = model_cls.config_class(**{k: v for k, v in cfg.items() if k != "model_type"})
    with torch.device("meta"):
        model = model_cls(config)
    state = revert_weight_conversion(model, dict(model.state_dict()))
    tied = bool(getattr(config.get_text_config(), "tie_word_embeddings", False) or
                getattr(config, "tie_word_embeddings", False))
    out = []
    for name, t in state.items():
        if tied and name.endswith("lm_head.weight"):
            continue  # save_pretrained drops the tied copy
        out.append((name, tuple(t.shape), str(t.dtype).removeprefix("torch.")))
    return tuple(sorted(out))


def meta_layout(class_name: str, config: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """{on-disk name: (shape, dtype)} of ``class_name`` built from ``config``."""
    import json

    return {n: (s, d) for n, s, d in _layout_cached(class_name, json.dumps(config, sort_keys=True))}
