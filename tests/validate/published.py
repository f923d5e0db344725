"""The published configs of every model in ``supported_models.json`` (the sizes and
architecture keys of the released config.json files, restated as data: no hub), and
their on-disk layouts as the releases store them: transformers' own layout (meta device,
weight conversions reverted) in bf16, DeepSeek's linear weights in block FP8 with
``weight_scale_inv`` and its multi-token-prediction layer, gpt-oss experts in MXFP4
blocks and scales. Vision towers come with the multimodal classes."""

from __future__ import annotations

import math
from typing import Any

from tests.validate.meta_layouts import meta_layout

SIGLIP = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
          "image_size": 896, "patch_size": 14, "vision_use_head": False, "model_type": "siglip_vision_model"}
LLAMA4_VISION = {"hidden_size": 1408, "intermediate_size": 5632, "num_hidden_layers": 34, "num_attention_heads": 16,
                 "image_size": 336, "patch_size": 14, "vision_output_dim": 4096, "projector_input_dim": 4096,
                 "projector_output_dim": 4096, "pixel_shuffle_ratio": 0.5}


def _dense(h: int, i: int, layers: int, heads: int, kv: int, vocab: int, **extra: Any) -> dict[str, Any]:
    return {"hidden_size": h, "intermediate_size": i, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "vocab_size": vocab, "pad_token_id": None, **extra}


def _llama4(experts: int, step: int) -> dict[str, Any]:
    text = _dense(5120, 8192, 48, 40, 8, 202048, head_dim=128, intermediate_size_mlp=16384,
                  num_local_experts=experts, interleave_moe_layer_step=step, model_type="llama4_text")
    return {"model_type": "llama4", "architectures": ["Llama4ForConditionalGeneration"], "text_config": text,
            "vision_config": LLAMA4_VISION, "tie_word_embeddings": False}


def _gemma3(text: dict[str, Any]) -> dict[str, Any]:
    return {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], "mm_tokens_per_image": 256,
            "text_config": {**text, "model_type": "gemma3_text"}, "vision_config": SIGLIP}


def _c(model_type: str, arch: str, **cfg: Any) -> dict[str, Any]:
    return {"model_type": model_type, "architectures": [arch], **cfg}


GPT_OSS_Q = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                                 "model.embed_tokens", "lm_head"]}
DEEPSEEK_Q = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}

# supported model name → (class, config.json as published)
PUBLISHED: dict[str, tuple[str, dict[str, Any]]] = {
    "Llama-2-7B": ("LlamaForCausalLM", _c("llama", "LlamaForCausalLM", **_dense(4096, 11008, 32, 32, 32, 32000))),
    "Llama-2-13B": ("LlamaForCausalLM", _c("llama", "LlamaForCausalLM", **_dense(5120, 13824, 40, 40, 40, 32000))),
    "CodeLlama-13B": ("LlamaForCausalLM", _c("llama", "LlamaForCausalLM", **_dense(5120, 13824, 40, 40, 40, 32016))),
    "Llama-3.1-8B": ("LlamaForCausalLM", _c("llama", "LlamaForCausalLM", **_dense(4096, 14336, 32, 32, 8, 128256))),
    "Llama-3.1-70B": ("LlamaForCausalLM", _c("llama", "LlamaForCausalLM", **_dense(8192, 28672, 80, 64, 8, 128256))),
    "Llama-3.2-1B": ("LlamaForCausalLM", _c("llama", "LlamaForCausalLM", tie_word_embeddings=True,
                                            **_dense(2048, 8192, 16, 32, 8, 128256, head_dim=64))),
    "Llama-3.2-3B": ("LlamaForCausalLM", _c("llama", "LlamaForCausalLM", tie_word_embeddings=True,
                                            **_dense(3072, 8192, 28, 24, 8, 128256, head_dim=128))),
    "Llama-4-Scout-17B-16E": ("Llama4ForConditionalGeneration", _llama4(16, 1)),
    "Llama-4-Maverick-17B-128E": ("Llama4ForConditionalGeneration", _llama4(128, 2)),
    "Gemma-2-9B": ("Gemma2ForCausalLM", _c("gemma2", "Gemma2ForCausalLM",
                                          **_dense(3584, 14336, 42, 16, 8, 256000, head_dim=256))),
    "Gemma-2-27B": ("Gemma2ForCausalLM", _c("gemma2", "Gemma2ForCausalLM",
                                           **_dense(4608, 36864, 46, 32, 16, 256000, head_dim=128))),
    "Gemma-3-1B": ("Gemma3ForCausalLM", _c("gemma3_text", "Gemma3ForCausalLM",
                                          **_dense(1152, 6912, 26, 4, 1, 262144, head_dim=256))),
    # Gemma-3-4B's text config has no num_attention_heads and no head_dim (class defaults 8 and 256)
    "Gemma-3-4B / MedGemma-4B": ("Gemma3ForConditionalGeneration", _gemma3(
        {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34, "num_key_value_heads": 4,
         "vocab_size": 262208})),
    "Gemma-3-12B": ("Gemma3ForConditionalGeneration", _gemma3(  # no head_dim: 256, not 3840 / 16
        {"hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48, "num_attention_heads": 16,
         "num_key_value_heads": 8, "vocab_size": 262208})),
    "Gemma-3-27B": ("Gemma3ForConditionalGeneration", _gemma3(
        {"hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 62, "num_attention_heads": 32,
         "num_key_value_heads": 16, "head_dim": 128, "vocab_size": 262208})),
    "MedGemma-27B-text": ("Gemma3ForCausalLM", _c("gemma3_text", "Gemma3ForCausalLM",
                                                 **_dense(5376, 21504, 62, 32, 16, 262144, head_dim=128))),
    "Qwen2.5-0.5B": ("Qwen2ForCausalLM", _c("qwen2", "Qwen2ForCausalLM", tie_word_embeddings=True,
                                           **_dense(896, 4864, 24, 14, 2, 151936))),
    "Qwen2-1.5B / Qwen2.5-1.5B": ("Qwen2ForCausalLM", _c("qwen2", "Qwen2ForCausalLM", tie_word_embeddings=True,
                                                        **_dense(1536, 8960, 28, 12, 2, 151936))),
    "Qwen2.5-7B": ("Qwen2ForCausalLM", _c("qwen2", "Qwen2ForCausalLM", tie_word_embeddings=False,
                                         **_dense(3584, 18944, 28, 28, 4, 152064))),
    "Qwen2.5-32B": ("Qwen2ForCausalLM", _c("qwen2", "Qwen2ForCausalLM", tie_word_embeddings=False,
                                          **_dense(5120, 27648, 64, 40, 8, 152064))),
    "Qwen3-0.6B": ("Qwen3ForCausalLM", _c("qwen3", "Qwen3ForCausalLM", tie_word_embeddings=True,
                                         **_dense(1024, 3072, 28, 16, 8, 151936, head_dim=128))),
    "Qwen3-1.7B": ("Qwen3ForCausalLM", _c("qwen3", "Qwen3ForCausalLM", tie_word_embeddings=True,
                                         **_dense(2048, 6144, 28, 16, 8, 151936, head_dim=128))),
    "Qwen3-8B": ("Qwen3ForCausalLM", _c("qwen3", "Qwen3ForCausalLM", tie_word_embeddings=False,
                                       **_dense(4096, 12288, 36, 32, 8, 151936, head_dim=128))),
    "Qwen3-32B": ("Qwen3ForCausalLM", _c("qwen3", "Qwen3ForCausalLM", tie_word_embeddings=False,
                                        **_dense(5120, 25600, 64, 64, 8, 151936, head_dim=128))),
    "Qwen3-Coder-480B-A35B-Instruct": ("Qwen3MoeForCausalLM", _c(
        "qwen3_moe", "Qwen3MoeForCausalLM", **_dense(6144, 8192, 62, 96, 8, 151936, head_dim=128),
        moe_intermediate_size=2560, num_experts=160, num_experts_per_tok=8, decoder_sparse_step=1, mlp_only_layers=[])),
    "Qwen3-Next-80B-A3B-Instruct / -Thinking": ("Qwen3NextForCausalLM", _c(
        "qwen3_next", "Qwen3NextForCausalLM", **_dense(2048, 5120, 48, 16, 2, 151936, head_dim=256),
        moe_intermediate_size=512, shared_expert_intermediate_size=512, num_experts=512, num_experts_per_tok=10,
        linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128, linear_value_head_dim=128,
        linear_conv_kernel_dim=4, full_attention_interval=4, decoder_sparse_step=1, mlp_only_layers=[])),
    "DeepSeek-V3 / DeepSeek-R1 / DeepSeek-V3.1": ("DeepseekV3ForCausalLM", _c(
        "deepseek_v3", "DeepseekV3ForCausalLM", **_dense(7168, 18432, 61, 128, 128, 129280),
        moe_intermediate_size=2048, n_routed_experts=256, n_shared_experts=1, first_k_dense_replace=3,
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        n_group=8, topk_group=4, num_experts_per_tok=8, num_nextn_predict_layers=1, topk_method="noaux_tc", scoring_func="sigmoid",
        quantization_config=DEEPSEEK_Q,
        auto_map={"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                  "AutoModel": "modeling_deepseek.DeepseekV3Model",
                  "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"})),
    "Mistral-7B-v0.1": ("MistralForCausalLM", _c("mistral", "MistralForCausalLM",
                                                **_dense(4096, 14336, 32, 32, 8, 32000))),
    "Mistral-Nemo-Base-2407": ("MistralForCausalLM", _c("mistral", "MistralForCausalLM",
                                                       **_dense(5120, 14336, 40, 32, 8, 131072, head_dim=128))),
    "Mixtral-8x7B-v0.1": ("MixtralForCausalLM", _c("mixtral", "MixtralForCausalLM", num_local_experts=8,
                                                  num_experts_per_tok=2, **_dense(4096, 14336, 32, 32, 8, 32000))),
    "Phi-4-reasoning": ("Phi3ForCausalLM", _c("phi3", "Phi3ForCausalLM", **_dense(5120, 17920, 40, 40, 10, 100352))),
    "gpt-oss-20b": ("GptOssForCausalLM", _c("gpt_oss", "GptOssForCausalLM", quantization_config=GPT_OSS_Q,
                                           num_local_experts=32, num_experts_per_tok=4,
                                           **_dense(2880, 2880, 24, 64, 8, 201088, head_dim=64))),
    "gpt-oss-120b": ("GptOssForCausalLM", _c("gpt_oss", "GptOssForCausalLM", quantization_config=GPT_OSS_Q,
                                            num_local_experts=128, num_experts_per_tok=4,
                                            **_dense(2880, 2880, 36, 64, 8, 201088, head_dim=64))),
}

Layout = dict[str, tuple[tuple[int, ...], str]]


def _class_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the transformers class is built from: the file minus what only the release
    carries (the FP8/MXFP4 quantization config: the layout is re-quantized below)."""
    return {k: v for k, v in cfg.items() if k not in ("quantization_config", "auto_map", "architectures")}


def published_layout(name: str) -> Layout:
    """{tensor: (shape, safetensors dtype)} as the release of ``name`` stores it."""
    class_name, cfg = PUBLISHED[name]
    layout = {n: (s, "BF16") for n, (s, _d) in meta_layout(class_name, _class_config(cfg)).items()}
    if cfg["model_type"] == "deepseek_v3":
        layout = _deepseek_release(layout, cfg)
    if cfg["model_type"] == "gpt_oss":
        layout = _mxfp4(layout)
    if cfg["model_type"] == "qwen3_next":
        layout = _qwen3_next_release(layout, cfg)
    return layout


def _qwen3_next_release(layout: Layout, cfg: dict[str, Any]) -> Layout:
    """The release also holds the multi-token-prediction module ``mtp.*`` (which
    transformers does not load): one full-attention MoE layer, ``fc`` and three norms."""
    full = cfg["full_attention_interval"] - 1  # the first full-attention layer
    hidden = cfg["hidden_size"]
    mtp: Layout = {n.replace(f"model.layers.{full}.", "mtp.layers.0."): v
                   for n, v in layout.items() if n.startswith(f"model.layers.{full}.")}
    mtp.update({"mtp.fc.weight": ((hidden, 2 * hidden), "BF16"), "mtp.norm.weight": ((hidden,), "BF16"),
                "mtp.pre_fc_norm_embedding.weight": ((hidden,), "BF16"),
                "mtp.pre_fc_norm_hidden.weight": ((hidden,), "BF16")})
    return {**layout, **mtp}


def _deepseek_release(layout: Layout, cfg: dict[str, Any]) -> Layout:
    """FP8 e4m3 linear weights in 128 × 128 blocks with F32 ``weight_scale_inv``; the
    router, norms, embedding and head stay bf16. Plus the MTP layer ``model.layers.61``:
    a decoder layer (as layer 60) with ``enorm``, ``hnorm``, ``eh_proj`` and its own
    embedding and ``shared_head``."""
    last = cfg["num_hidden_layers"] - 1
    mtp = cfg["num_hidden_layers"]
    hidden, vocab = cfg["hidden_size"], cfg["vocab_size"]
    extra: Layout = {n.replace(f"model.layers.{last}.", f"model.layers.{mtp}."): v
                     for n, v in layout.items() if n.startswith(f"model.layers.{last}.")}
    extra.update({f"model.layers.{mtp}.enorm.weight": ((hidden,), "BF16"),
                  f"model.layers.{mtp}.hnorm.weight": ((hidden,), "BF16"),
                  f"model.layers.{mtp}.eh_proj.weight": ((hidden, 2 * hidden), "BF16"),
                  f"model.layers.{mtp}.embed_tokens.weight": ((vocab, hidden), "BF16"),
                  f"model.layers.{mtp}.shared_head.norm.weight": ((hidden,), "BF16"),
                  f"model.layers.{mtp}.shared_head.head.weight": ((vocab, hidden), "BF16")})
    out: Layout = {}
    for n, (shape, dtype) in {**layout, **extra}.items():
        fp8 = (n.startswith("model.layers.") and n.endswith("_proj.weight") and len(shape) == 2
               and "eh_proj" not in n and "layernorm" not in n)
        if fp8:
            out[n] = (shape, "F8_E4M3")
            out[n + "_scale_inv"] = ((math.ceil(shape[0] / 128), math.ceil(shape[1] / 128)), "F32")
        else:
            out[n] = (shape, dtype)
    return out


def _mxfp4(layout: Layout) -> Layout:
    """gpt-oss experts as released: ``gate_up_proj`` [E, H, 2I] → ``_blocks`` [E, 2I,
    H/32, 16] U8 + ``_scales`` [E, 2I, H/32] U8 (likewise ``down_proj``); biases bf16."""
    out: Layout = {}
    for n, (shape, dtype) in layout.items():
        if n.endswith(("experts.gate_up_proj", "experts.down_proj")):
            e, k, m = shape  # stored transposed: [experts, in, out] in memory, [experts, out, in/32, 16] on disk
            out[n + "_blocks"] = ((e, m, k // 32, 16), "U8")
            out[n + "_scales"] = ((e, m, k // 32), "U8")
        else:
            out[n] = (shape, dtype)
    return out


def parameters(layout: Layout) -> int:
    """Counted as validate counts them: MXFP4 blocks hold two values a byte, their
    scales are not parameters."""
    return sum(math.prod(s) * (2 if d == "U8" and n.endswith("_blocks") else 1) for n, (s, d) in layout.items()
               if not (d == "U8" and n.endswith("_scales")))
