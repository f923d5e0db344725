"""Every tensor a supported architecture must hold, with its shape, from config.json.

The server builds the model from the config and refuses a checkpoint that lacks a
tensor or holds one of another shape, after the GPUs are provisioned; validate finds
both from headers alone. Two sources, no transformers import:

* ``config_defaults.json`` — the defaults of each transformers config class (generated
  from transformers by ``tests/validate/config_defaults_gen.py``; a test fails when it is
  stale). An absent key means the class default, as it does for the server: Gemma-3's
  ``head_dim`` is 256, not hidden / heads.
* the per-architecture rules below, on the *on-disk* names (what ``save_pretrained``
  writes after transformers reverts its weight conversions: Mixtral's
  ``block_sparse_moe.experts.N.w1``, DeepSeek's per-expert ``mlp.experts.N.gate_proj``,
  gpt-oss's fused ``mlp.experts.gate_up_proj`` or its MXFP4 ``_blocks``/``_scales``).
  ``tests/validate/test_architectures.py`` checks them against the transformers classes.

Names are relative to the language model's prefix (``model.``, ``language_model.model.``
or ``model.language_model.``, found from the embedding).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

Shape = tuple[int, ...]
MXFP4_BLOCK = 32  # values per scale; two 4-bit values a byte → 16 bytes a block


@lru_cache(maxsize=1)
def _defaults_doc() -> dict[str, Any]:
    text = resources.files("tune2serve.components.validate").joinpath("config_defaults.json").read_text("utf-8")
    return json.loads(text)


def class_defaults(model_type: str | None) -> dict[str, Any]:
    """The plain defaults of the transformers config class for ``model_type`` ({} if unknown)."""
    return dict(_defaults_doc()["defaults"].get(model_type or "", {}))


def class_aliases(model_type: str | None) -> dict[str, str]:
    """The config class's ``attribute_map`` (alias → attribute): both spellings are read."""
    return dict(_defaults_doc().get("aliases", {}).get(model_type or "", {}))


def _canonical(layer: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """``layer`` with every aliased key under its attribute name; where a layer spells
    both, the attribute name wins, as transformers' ``__init__`` keeps it."""
    out = {aliases.get(k, k): v for k, v in layer.items() if k not in aliases}
    for alias, attr in aliases.items():
        if alias in layer and attr not in layer:
            out[attr] = layer[alias]
    return out


def effective_text_config(doc: dict[str, Any]) -> dict[str, Any]:
    """The language model's config as the server sees it: the file's keys over the config
    class defaults; for multimodal configs, ``text_config`` over the top level. Keys the
    class renames (``attribute_map``: transformers 5 writes Qwen3-MoE's ``num_local_experts``
    where transformers 4 wrote ``num_experts``) are read under either spelling and given
    under both."""
    model_type = doc.get("model_type") if isinstance(doc.get("model_type"), str) else None
    top = dict(doc)  # an explicit null is kept: DeepSeek's "q_lora_rank": null means no query compression
    text = doc.get("text_config")
    if not isinstance(text, dict):
        layers, types = [class_defaults(model_type), top], [model_type]
    else:
        text_type = text.get("model_type") if isinstance(text.get("model_type"), str) else \
            _defaults_doc()["text_config_types"].get(model_type or "")
        layers, types = [class_defaults(model_type), class_defaults(text_type), top, text], [model_type, text_type]
    aliases: dict[str, str] = {}
    for t in types:
        aliases.update(class_aliases(t))
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(_canonical(layer, aliases))
    for alias, attr in aliases.items():
        if attr in merged:
            merged[alias] = merged[attr]
    if isinstance(text, dict):
        merged["model_type"] = types[1] or model_type
    return merged


def _i(cfg: dict[str, Any], key: str) -> int:
    v = cfg.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def head_dim(cfg: dict[str, Any]) -> int:
    heads = _i(cfg, "num_attention_heads")
    return _i(cfg, "head_dim") or (_i(cfg, "hidden_size") // heads if heads else 0)


def kv_heads(cfg: dict[str, Any]) -> int:
    return _i(cfg, "num_key_value_heads") or _i(cfg, "num_attention_heads")


def extra_layers(cfg: dict[str, Any]) -> int:
    """Layers stored after ``num_hidden_layers`` that the server may load or skip:
    DeepSeek-V3's multi-token-prediction layers (``num_nextn_predict_layers``)."""
    return _i(cfg, "num_nextn_predict_layers")


KNOWN = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "mixtral", "qwen3_moe",
                   "qwen3_next", "deepseek_v3", "gpt_oss", "llama4_text"})


def layer_tensors(cfg: dict[str, Any], index: int, present: set[str] | frozenset[str] = frozenset()) -> dict[str, Shape] | None:
    """The tensors layer ``index`` must hold (names relative to ``layers.{index}.``), or
    None when the architecture is not one this module knows or the config lacks sizes.
    ``present`` (the names the layer holds) picks between published variants (gpt-oss
    MXFP4 or bf16 experts)."""
    arch = cfg.get("model_type")
    hidden = _i(cfg, "hidden_size")
    if arch not in KNOWN or not hidden or not _i(cfg, "num_attention_heads"):
        return None
    out: dict[str, Shape] = {"input_layernorm.weight": (hidden,), "post_attention_layernorm.weight": (hidden,)}
    if arch in ("gemma2", "gemma3_text"):
        out.update({"pre_feedforward_layernorm.weight": (hidden,), "post_feedforward_layernorm.weight": (hidden,)})
    attn = _attention(cfg, arch, index)
    mlp = _mlp(cfg, arch, index, present)
    if attn is None or mlp is None:
        return None
    return {**out, **attn, **mlp}


def _attention(cfg: dict[str, Any], arch: str, index: int) -> dict[str, Shape] | None:
    hidden, heads, kv, hd = _i(cfg, "hidden_size"), _i(cfg, "num_attention_heads"), kv_heads(cfg), head_dim(cfg)
    if arch == "deepseek_v3":
        return _mla(cfg)
    if arch == "qwen3_next" and not _full_attention(cfg, index):
        return _gated_delta_net(cfg)
    if not hd:
        return None
    p = "self_attn."
    if arch == "phi3":
        return {p + "qkv_proj.weight": ((heads + 2 * kv) * hd, hidden), p + "o_proj.weight": (hidden, heads * hd)}
    q_rows = heads * hd * (2 if arch == "qwen3_next" else 1)  # gated attention: query and gate
    out: dict[str, Shape] = {p + "q_proj.weight": (q_rows, hidden), p + "k_proj.weight": (kv * hd, hidden),
                             p + "v_proj.weight": (kv * hd, hidden), p + "o_proj.weight": (hidden, heads * hd)}
    if arch == "qwen2" or arch == "gpt_oss" or cfg.get("attention_bias") is True:
        out.update({p + "q_proj.bias": (heads * hd,), p + "k_proj.bias": (kv * hd,), p + "v_proj.bias": (kv * hd,)})
    if arch == "gpt_oss" or (cfg.get("attention_bias") is True and arch != "qwen2"):
        out[p + "o_proj.bias"] = (hidden,)
    if arch in ("qwen3", "qwen3_moe", "qwen3_next", "gemma3_text"):
        out.update({p + "q_norm.weight": (hd,), p + "k_norm.weight": (hd,)})
    if arch == "gpt_oss":
        out[p + "sinks"] = (heads,)
    return out


def _mla(cfg: dict[str, Any]) -> dict[str, Shape] | None:
    """DeepSeek's multi-head latent attention: low-rank query and a shared compressed KV."""
    hidden, heads = _i(cfg, "hidden_size"), _i(cfg, "num_attention_heads")
    nope, rope, v, kv_rank = (_i(cfg, k) for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "kv_lora_rank"))
    if not (nope and rope and v and kv_rank):
        return None
    p, q_rank = "self_attn.", _i(cfg, "q_lora_rank")
    out: dict[str, Shape] = {
        p + "kv_a_proj_with_mqa.weight": (kv_rank + rope, hidden), p + "kv_a_layernorm.weight": (kv_rank,),
        p + "kv_b_proj.weight": (heads * (nope + v), kv_rank), p + "o_proj.weight": (hidden, heads * v),
    }
    if q_rank:
        out.update({p + "q_a_proj.weight": (q_rank, hidden), p + "q_a_layernorm.weight": (q_rank,),
                    p + "q_b_proj.weight": (heads * (nope + rope), q_rank)})
    else:
        out[p + "q_proj.weight"] = (heads * (nope + rope), hidden)
    return out


def _full_attention(cfg: dict[str, Any], index: int) -> bool:
    types = cfg.get("layer_types")
    if isinstance(types, list) and index < len(types):
        return types[index] == "full_attention"
    interval = _i(cfg, "full_attention_interval") or 4
    return (index + 1) % interval == 0


def _gated_delta_net(cfg: dict[str, Any]) -> dict[str, Shape] | None:
    """Qwen3-Next's linear-attention layers (gated DeltaNet)."""
    hidden = _i(cfg, "hidden_size")
    nk, nv, dk, dv, kernel = (_i(cfg, k) for k in ("linear_num_key_heads", "linear_num_value_heads",
                                                      "linear_key_head_dim", "linear_value_head_dim",
                                                      "linear_conv_kernel_dim"))
    if not (nk and nv and dk and dv and kernel):
        return None
    key_dim, value_dim, p = nk * dk, nv * dv, "linear_attn."
    return {p + "in_proj_qkvz.weight": (2 * key_dim + 2 * value_dim, hidden), p + "in_proj_ba.weight": (2 * nv, hidden),
            p + "conv1d.weight": (2 * key_dim + value_dim, 1, kernel), p + "dt_bias": (nv,), p + "A_log": (nv,),
            p + "norm.weight": (dv,), p + "out_proj.weight": (hidden, value_dim)}


def _dense(prefix: str, hidden: int, inter: int) -> dict[str, Shape]:
    return {prefix + "gate_proj.weight": (inter, hidden), prefix + "up_proj.weight": (inter, hidden),
            prefix + "down_proj.weight": (hidden, inter)}


def _experts(prefix: str, n: int, hidden: int, inter: int, names: tuple[str, str, str]) -> dict[str, Shape]:
    gate, down, up = names
    out: dict[str, Shape] = {}
    for e in range(n):
        out.update({f"{prefix}{e}.{gate}.weight": (inter, hidden), f"{prefix}{e}.{down}.weight": (hidden, inter),
                    f"{prefix}{e}.{up}.weight": (inter, hidden)})
    return out


def _sparse_layer(cfg: dict[str, Any], index: int) -> bool:
    """Qwen3-MoE / Qwen3-Next: MoE unless listed in ``mlp_only_layers`` or off the step."""
    only = cfg.get("mlp_only_layers") or []
    step = _i(cfg, "decoder_sparse_step") or 1
    return index not in only and _i(cfg, "num_experts") > 0 and (index + 1) % step == 0


def _mlp(cfg: dict[str, Any], arch: str, index: int, present: set[str] | frozenset[str]) -> dict[str, Shape] | None:
    hidden, inter = _i(cfg, "hidden_size"), _i(cfg, "intermediate_size")
    if arch == "phi3":
        return {"mlp.gate_up_proj.weight": (2 * inter, hidden), "mlp.down_proj.weight": (hidden, inter)} if inter else None
    if arch == "mixtral":
        n = _i(cfg, "num_local_experts")
        out = _experts("block_sparse_moe.experts.", n, hidden, inter, ("w1", "w2", "w3"))
        return {"block_sparse_moe.gate.weight": (n, hidden), **out} if n and inter else None
    if arch in ("qwen3_moe", "qwen3_next") and _sparse_layer(cfg, index):
        n, moe = _i(cfg, "num_experts"), _i(cfg, "moe_intermediate_size")
        if not moe:
            return None
        out = {"mlp.gate.weight": (n, hidden),
               **_experts("mlp.experts.", n, hidden, moe, ("gate_proj", "down_proj", "up_proj"))}
        if arch == "qwen3_next":
            shared = _i(cfg, "shared_expert_intermediate_size")
            out.update({**_dense("mlp.shared_expert.", hidden, shared), "mlp.shared_expert_gate.weight": (1, hidden)})
        return out
    if arch == "deepseek_v3" and index >= _i(cfg, "first_k_dense_replace") and _i(cfg, "n_routed_experts"):
        n, moe, shared = _i(cfg, "n_routed_experts"), _i(cfg, "moe_intermediate_size"), _i(cfg, "n_shared_experts")
        if not moe:
            return None
        return {"mlp.gate.weight": (n, hidden), "mlp.gate.e_score_correction_bias": (n,),
                **_experts("mlp.experts.", n, hidden, moe, ("gate_proj", "down_proj", "up_proj")),
                **_dense("mlp.shared_experts.", hidden, moe * shared)}
    if arch == "gpt_oss":
        return _gpt_oss_experts(cfg, present)
    if arch == "llama4_text":
        return _llama4_ffn(cfg, index)
    if not inter:
        return None
    out = _dense("mlp.", hidden, inter)
    if arch == "llama" and cfg.get("mlp_bias") is True:  # LlamaMLP's bias=config.mlp_bias, in transformers and vLLM
        out.update({"mlp.gate_proj.bias": (inter,), "mlp.up_proj.bias": (inter,), "mlp.down_proj.bias": (hidden,)})
    return out


def _gpt_oss_experts(cfg: dict[str, Any], present: set[str] | frozenset[str]) -> dict[str, Shape] | None:
    hidden, inter, n = _i(cfg, "hidden_size"), _i(cfg, "intermediate_size"), _i(cfg, "num_local_experts")
    if not (inter and n):
        return None
    p = "mlp.experts."
    out: dict[str, Shape] = {"mlp.router.weight": (n, hidden), "mlp.router.bias": (n,),
                             p + "gate_up_proj_bias": (n, 2 * inter), p + "down_proj_bias": (n, hidden)}
    if p + "gate_up_proj_blocks" in present or p + "down_proj_blocks" in present:  # published MXFP4
        out.update({p + "gate_up_proj_blocks": (n, 2 * inter, hidden // MXFP4_BLOCK, 16),
                    p + "gate_up_proj_scales": (n, 2 * inter, hidden // MXFP4_BLOCK),
                    p + "down_proj_blocks": (n, hidden, inter // MXFP4_BLOCK, 16),
                    p + "down_proj_scales": (n, hidden, inter // MXFP4_BLOCK)})
    else:
        out.update({p + "gate_up_proj": (n, hidden, 2 * inter), p + "down_proj": (n, inter, hidden)})
    return out


def _llama4_moe_layer(cfg: dict[str, Any], index: int) -> bool:
    layers = cfg.get("moe_layers")
    if isinstance(layers, list):
        return index in layers
    step = _i(cfg, "interleave_moe_layer_step") or 1
    return (index + 1) % step == 0


def _llama4_ffn(cfg: dict[str, Any], index: int) -> dict[str, Shape] | None:
    hidden, inter, n = _i(cfg, "hidden_size"), _i(cfg, "intermediate_size"), _i(cfg, "num_local_experts")
    if not _llama4_moe_layer(cfg, index):
        dense = _i(cfg, "intermediate_size_mlp")
        return _dense("feed_forward.", hidden, dense) if dense else None
    if not (inter and n):
        return None
    return {"feed_forward.router.weight": (n, hidden),
            "feed_forward.experts.gate_up_proj": (n, hidden, 2 * inter),
            "feed_forward.experts.down_proj": (n, inter, hidden),
            **_dense("feed_forward.shared_expert.", hidden, inter)}


def block_scale_shape(weight: Shape, block: list[int]) -> Shape:
    """The ``weight_scale_inv`` of a block-quantized FP8 weight (DeepSeek: 128 × 128)."""
    return tuple(-(-d // b) for d, b in zip(weight, block))
