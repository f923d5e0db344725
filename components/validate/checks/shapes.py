"""Tensor shapes agree with config.json.

vLLM builds the model from config.json and copies each tensor into a parameter of the
shape the config implies; any disagreement fails the load. Checked (for the standard
decoder names, with or without a ``language_model.`` prefix): the embedding is
vocab_size × hidden_size; layers 0..num_hidden_layers-1 are all present and no other;
q/k/v/o match heads × head_dim and num_key_value_heads (fused qkv_proj for Phi); the
dense MLP matches intermediate_size; tied embeddings ⇒ lm_head absent or the embedding's
shape, untied ⇒ lm_head present. Multi-head-latent (DeepSeek) and gated (Qwen3-Next)
attention have other projections: their attention shapes are not checked.
"""

from __future__ import annotations

import re
from typing import Any

from tune2serve.components.validate.context import CONFIG, Checkpoint
from tune2serve.components.validate.findings import Finding, error, info
from tune2serve.components.validate.supported import load_supported

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_OTHER_TOWER = re.compile(r"vision|multi_modal|audio|visual")  # multimodal towers have their own config
SKIP_ATTENTION = frozenset({"deepseek_v3", "deepseek_v2", "qwen3_next"})


def check_shapes(ckpt: Checkpoint) -> list[Finding]:
    doc = ckpt.config_doc
    if doc is None:
        return []
    if not ckpt.tensors:
        if ckpt.weights.bins:
            return [info("shapes-not-checked", ".bin weights: tensor shapes are not read from the pickle, so they "
                                               "were not compared with config.json", ckpt.weights.bins[0])]
        return []
    cfg = ckpt.text_config
    found: list[Finding] = []
    found += _embeddings(ckpt, cfg, doc)
    found += _layers(ckpt, cfg)
    model_type = doc.get("model_type")
    for name, t in ckpt.tensors.items():
        expected = _expected_shape(name, cfg, skip_attention=model_type in SKIP_ATTENTION)
        if expected is not None and tuple(t.shape) != expected:
            found.append(error("shape-mismatch", f"{name} has shape {list(t.shape)} but {CONFIG} implies "
                                                 f"{list(expected)}", ckpt.tensor_files[name]))
    return _grouped(found)


def _int(cfg: dict[str, Any], key: str) -> int | None:
    v = cfg.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _expected_shape(name: str, cfg: dict[str, Any], skip_attention: bool) -> tuple[int, ...] | None:
    hidden, inter = _int(cfg, "hidden_size"), _int(cfg, "intermediate_size")
    heads = _int(cfg, "num_attention_heads")
    kv = _int(cfg, "num_key_value_heads") or heads
    head_dim = _int(cfg, "head_dim") or (hidden // heads if hidden and heads else None)
    if not hidden or not _LAYER.search(name) or not name.endswith(".weight") or _OTHER_TOWER.search(name):
        return None
    part = name.rsplit(".", 2)[-2]  # q_proj in ...self_attn.q_proj.weight
    parent = name.rsplit(".", 3)[-3]
    if parent == "self_attn" and not skip_attention and heads and kv and head_dim:
        return {
            "q_proj": (heads * head_dim, hidden),
            "k_proj": (kv * head_dim, hidden),
            "v_proj": (kv * head_dim, hidden),
            "o_proj": (hidden, heads * head_dim),
            "qkv_proj": ((heads + 2 * kv) * head_dim, hidden),
        }.get(part)
    if parent == "mlp" and inter:
        return {
            "gate_proj": (inter, hidden), "up_proj": (inter, hidden), "down_proj": (hidden, inter),
            "gate_up_proj": (2 * inter, hidden),
        }.get(part)
    return None


def _find(ckpt: Checkpoint, suffix: str) -> str | None:
    return next((n for n in ckpt.tensors if n == suffix or n.endswith("." + suffix)), None)


def _embeddings(ckpt: Checkpoint, cfg: dict[str, Any], doc: dict[str, Any]) -> list[Finding]:
    found: list[Finding] = []
    vocab, hidden = _int(cfg, "vocab_size"), _int(cfg, "hidden_size")
    embed = _find(ckpt, "embed_tokens.weight")
    head = "lm_head.weight" if "lm_head.weight" in ckpt.tensors else _find(ckpt, "lm_head.weight")
    for name in (embed, head):
        if name and vocab and hidden and tuple(ckpt.tensors[name].shape) != (vocab, hidden):
            what = "vocab_size × hidden_size"
            found.append(error("shape-mismatch", f"{name} has shape {list(ckpt.tensors[name].shape)} but {CONFIG} "
                                                 f"implies {what} = [{vocab}, {hidden}]", ckpt.tensor_files[name]))
    tied = _tied(cfg, doc)
    if tied is False and embed and not head:
        found.append(error("lm-head-missing", f"{CONFIG} sets tie_word_embeddings false but no shard holds "
                                              "lm_head.weight; the server would start with an untrained output layer",
                           CONFIG))
    if tied is True and embed and head and ckpt.tensors[head].shape != ckpt.tensors[embed].shape:
        found.append(error("tied-embeddings-mismatch", f"{CONFIG} ties the embeddings but lm_head.weight "
                                                       f"{list(ckpt.tensors[head].shape)} differs from {embed} "
                                                       f"{list(ckpt.tensors[embed].shape)}", ckpt.tensor_files[head]))
    return found


def _tied(cfg: dict[str, Any], doc: dict[str, Any]) -> bool | None:
    for source in (doc, cfg):
        if isinstance(source.get("tie_word_embeddings"), bool):
            return bool(source["tie_word_embeddings"])
    family = load_supported().family_for(doc.get("model_type"), doc.get("architectures") or [])
    return family.tie_word_embeddings_default if family else None


def _layers(ckpt: Checkpoint, cfg: dict[str, Any]) -> list[Finding]:
    layers = _int(cfg, "num_hidden_layers")
    if not layers:
        return []
    seen = {int(m.group(1)) for n in ckpt.tensors if (m := _LAYER.search(n)) and not _OTHER_TOWER.search(n)}
    if not seen:
        return []
    missing = sorted(set(range(layers)) - seen)
    extra = sorted(seen - set(range(layers)))
    if not missing and not extra:
        return []
    detail = (f"missing layers {missing[:10]}" if missing else "") + ("; " if missing and extra else "") + (
        f"layers beyond the config: {extra[:10]}" if extra else "")
    return [error("layer-count-mismatch", f"{CONFIG} says num_hidden_layers = {layers} but the tensors hold "
                                          f"{len(seen)} layers ({detail})", CONFIG)]


def _grouped(found: list[Finding]) -> list[Finding]:
    """At most 5 shape findings per file, then one that counts the rest."""
    out: list[Finding] = []
    per_file: dict[str | None, int] = {}
    for f in found:
        if f.code != "shape-mismatch":
            out.append(f)
            continue
        per_file[f.file] = per_file.get(f.file, 0) + 1
        if per_file[f.file] <= 5:
            out.append(f)
    for file, n in per_file.items():
        if n > 5:
            out.append(error("shape-mismatch", f"{file}: {n - 5} more tensors disagree with {CONFIG}", file))
    return out
