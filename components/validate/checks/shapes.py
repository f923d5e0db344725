"""Every tensor the architecture needs is present, with the shape config.json implies.

vLLM builds the model from config.json and copies each tensor into a parameter of the
shape the config implies; a missing tensor or another shape fails the load after the
GPUs are provisioned. ``validate.architectures`` knows, from the config (class defaults
applied) and the architecture, every tensor of every layer: attention (standard, fused
``qkv_proj``, DeepSeek's multi-head latent, Qwen3-Next's gated and linear attention),
dense MLPs and experts (Mixtral ``w1/w2/w3``, per-expert Qwen3-MoE / DeepSeek, fused
gpt-oss and Llama-4, MXFP4 blocks and scales), norms. Checked: each of those is present
(``tensor-missing``) with its shape; the embedding is vocab_size × hidden_size; layers
are ``0..num_hidden_layers-1`` (plus DeepSeek's ``num_nextn_predict_layers`` MTP layers,
which may be present or not); FP8 ``weight_scale_inv`` matches the weight's blocks; tied
embeddings ⇒ lm_head absent or the embedding's shape, untied ⇒ lm_head present. Tensors
of other towers (vision) are not checked: they have their own configs.
"""

from __future__ import annotations

import re
from typing import Any

from tune2serve.components.validate.checks import config_bounds
from tune2serve.components.validate.architectures import block_scale_shape, extra_layers, layer_tensors
from tune2serve.components.validate.context import CONFIG, Checkpoint
from tune2serve.components.validate.findings import Finding, error, info
from tune2serve.components.validate.supported import load_supported

_EMBED = re.compile(r"^((?:[a-z_]+\.)*?)embed_tokens\.weight$")
_PEFT_WRAPPED = re.compile(r"(^base_model\.model\.)|(\.base_layer\.)|(\.lora_[AB]\.)")
MAX_LISTED = 10  # missing tensors named one by one; the rest are counted


def check_shapes(ckpt: Checkpoint) -> list[Finding]:
    doc = ckpt.config_doc
    if doc is None:
        return []
    if not ckpt.tensors:
        if ckpt.weights.bins:
            return [info("shapes-not-checked", ".bin weights: tensor shapes are not read from the pickle, so they "
                                               "were not compared with config.json", ckpt.weights.bins[0])]
        return []
    wrapped = sorted(n for n in ckpt.tensors if _PEFT_WRAPPED.search(n))
    if wrapped:  # a PeftModel's state dict saved as the model: the server would load random weights
        return [error("peft-wrapper-names", f"{len(wrapped)} tensors keep PEFT's wrapper names ({wrapped[0]}): a "
                                            "PeftModel's state dict saved as the model; transformers and vLLM would "
                                            "not find those weights. Save the merged, unwrapped model",
                      ckpt.tensor_files[wrapped[0]])]
    if not config_bounds.plausible(ckpt):
        return []  # a size field no model has (reported by config-bounds): nothing to compare against
    cfg = ckpt.text_config
    prefix = _lm_prefix(ckpt)
    found: list[Finding] = []
    found += _embeddings(ckpt, cfg, doc)
    found += _layers(ckpt, cfg, prefix)
    found += _required(ckpt, cfg, prefix)
    found += _fp8_scales(ckpt, cfg)
    return _grouped(found)


def _lm_prefix(ckpt: Checkpoint) -> str:
    """``model.``, ``language_model.model.`` or ``model.language_model.``: where the
    language model's embedding is (not an MTP layer's copy inside ``layers.N``)."""
    prefixes = [m.group(1) for n in ckpt.tensors if (m := _EMBED.match(n)) and "layers." not in m.group(1)]
    return min(prefixes, key=len) if prefixes else "model."


def _int(cfg: dict[str, Any], key: str) -> int | None:
    v = cfg.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _layer_index(name: str, prefix: str) -> int | None:
    if not name.startswith(prefix + "layers."):
        return None
    head = name[len(prefix) + 7:].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _by_layer(ckpt: Checkpoint, prefix: str) -> dict[int, dict[str, str]]:
    """{layer: {name within the layer: full name}}."""
    out: dict[int, dict[str, str]] = {}
    for name in ckpt.tensors:
        i = _layer_index(name, prefix)
        if i is not None:
            out.setdefault(i, {})[name.split(".", len(prefix.split(".")) + 1)[-1]] = name
    return out


def _required(ckpt: Checkpoint, cfg: dict[str, Any], prefix: str) -> list[Finding]:
    layers = _int(cfg, "num_hidden_layers") or 0
    by_layer = _by_layer(ckpt, prefix)
    missing: list[str] = []
    found: list[Finding] = []
    checked = False
    for i in range(layers + extra_layers(cfg)):
        held = by_layer.get(i, {})
        expected = layer_tensors(cfg, i, set(held))
        if expected is None:
            continue
        checked = True
        mtp = i >= layers  # multi-token-prediction layers: optional, shape-checked when present
        for rel, shape in expected.items():
            full = held.get(rel)
            if full is None:
                if not mtp and i in by_layer:  # a wholly missing layer is reported by _layers
                    missing.append(f"{prefix}layers.{i}.{rel}")
                continue
            if tuple(ckpt.tensors[full].shape) != shape:
                found.append(error("shape-mismatch", f"{full} has shape {list(ckpt.tensors[full].shape)} but "
                                                     f"{CONFIG} implies {list(shape)}", ckpt.tensor_files[full]))
    if checked:
        hidden = _int(cfg, "hidden_size")
        for rel in ("embed_tokens.weight", "norm.weight"):
            if prefix + rel not in ckpt.tensors:
                missing.append(prefix + rel)
            elif rel == "norm.weight" and hidden and tuple(ckpt.tensors[prefix + rel].shape) != (hidden,):
                found.append(error("shape-mismatch", f"{prefix + rel} has shape "
                                                     f"{list(ckpt.tensors[prefix + rel].shape)} but {CONFIG} implies "
                                                     f"[{hidden}]", ckpt.tensor_files[prefix + rel]))
    for name in missing[:MAX_LISTED]:
        found.append(error("tensor-missing", f"no shard holds {name}, which {cfg.get('model_type')} with this "
                                             f"{CONFIG} needs; the server would refuse to load the checkpoint", CONFIG))
    if len(missing) > MAX_LISTED:
        found.append(error("tensor-missing", f"{len(missing) - MAX_LISTED} more required tensors are missing", CONFIG))
    return found


def _fp8_scales(ckpt: Checkpoint, cfg: dict[str, Any]) -> list[Finding]:
    """Block-quantized FP8 (DeepSeek): each ``weight_scale_inv`` covers its weight's blocks."""
    qc = cfg.get("quantization_config")
    block = qc.get("weight_block_size") if isinstance(qc, dict) else None
    if not (isinstance(block, list) and block and all(isinstance(b, int) and b > 0 for b in block)):
        return []
    found: list[Finding] = []
    unscaled = [n for n, t in ckpt.tensors.items() if t.dtype.startswith("F8_") and n.endswith(".weight")
                and n + "_scale_inv" not in ckpt.tensors]
    for name in unscaled[:MAX_LISTED]:
        found.append(error("tensor-missing", f"no shard holds {name}_scale_inv: the FP8 weight {name} cannot be "
                                             "dequantized without its block scales", ckpt.tensor_files[name]))
    if len(unscaled) > MAX_LISTED:
        found.append(error("tensor-missing", f"{len(unscaled) - MAX_LISTED} more FP8 weights lack weight_scale_inv",
                           CONFIG))
    for name, t in ckpt.tensors.items():
        if not name.endswith(".weight_scale_inv"):
            continue
        weight = ckpt.tensors.get(name.removesuffix("_scale_inv"))
        if weight is None:
            found.append(error("shape-mismatch", f"{name} scales {name.removesuffix('_scale_inv')}, which no shard "
                                                 "holds", ckpt.tensor_files[name]))
            continue
        want = block_scale_shape(tuple(weight.shape), block)
        if tuple(t.shape) != want:
            found.append(error("shape-mismatch", f"{name} has shape {list(t.shape)} but the weight "
                                                 f"{list(weight.shape)} in {block} blocks implies {list(want)}",
                               ckpt.tensor_files[name]))
    return found


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


def _layers(ckpt: Checkpoint, cfg: dict[str, Any], prefix: str) -> list[Finding]:
    layers = _int(cfg, "num_hidden_layers")
    if not layers:
        return []
    seen = set(_by_layer(ckpt, prefix))
    if not seen:
        return []
    allowed = set(range(layers + extra_layers(cfg)))
    missing = sorted(set(range(layers)) - seen)
    extra = sorted(seen - allowed)
    if not missing and not extra:
        return []
    mtp = f" + {extra_layers(cfg)} num_nextn_predict_layers" if extra_layers(cfg) else ""
    detail = (f"missing layers {missing[:10]}" if missing else "") + ("; " if missing and extra else "") + (
        f"layers beyond the config: {extra[:10]}" if extra else "")
    return [error("layer-count-mismatch", f"{CONFIG} says num_hidden_layers = {layers}{mtp} but the tensors hold "
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
