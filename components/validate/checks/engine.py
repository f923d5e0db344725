"""The config as the target engine reads it: an architecture vLLM knows, rope settings
its transformers can build, nothing only a newer transformers understands.

* ``architectures`` must name a class vLLM's model registry knows
  (``vllm_architectures.json``, generated from the registry): vLLM picks the model class
  from ``architectures`` — not ``model_type`` — and refuses the folder when it inspects
  the config (a training wrapper's class such as ``LlamaForCausalLMWithValueHead``
  beside ``model_type: llama`` loads in transformers, not in vLLM).
* ``rope_parameters`` / ``rope_scaling`` (top level, ``text_config``, or per layer type)
  must be of a ``rope_type`` transformers validates or vLLM builds, with the keys that
  type is defined by: vLLM raises ``Unknown RoPE scaling type`` on others, transformers a
  ``KeyError`` on missing keys.
* A config written by a newer transformers than the target engine's — a
  transformers-5 key its transformers does not read (``rope_parameters``; Qwen3-MoE's
  ``num_local_experts``), a ``model_type`` it does not know — is a **warning** naming
  the target (``--target-vllm``; by default the vLLM the local stack runs, which reads
  everything tune2serve writes, so nothing to warn about). The config itself is accepted.
* DeepSeek-V3's router keys, which transformers ignores and vLLM obeys (``topk_method``,
  ``scoring_func``): see ``_deepseek_router``.
"""

from __future__ import annotations

from typing import Any

from tune2serve.components.validate import engines
from tune2serve.components.validate.context import CONFIG, Checkpoint
from tune2serve.components.validate.findings import Finding, error, warning
from tune2serve.components.validate.supported import load_supported


def check_engine(ckpt: Checkpoint) -> list[Finding]:
    doc = ckpt.config_doc
    if doc is None:
        return []
    target = engines.target(ckpt.options.target_vllm)
    return [*_architecture(doc), *_rope(doc), *_deepseek_router(ckpt), *_newer_than_target(doc, target)]


def _architecture(doc: dict[str, Any]) -> list[Finding]:
    """Only for a supported model_type (otherwise unsupported-architecture says it)."""
    model_type = doc.get("model_type") if isinstance(doc.get("model_type"), str) else None
    archs = doc.get("architectures")
    if not isinstance(archs, list) or not archs or load_supported().family_for(model_type, []) is None:
        return []
    known = engines.vllm_architectures()
    if any(isinstance(a, str) and a in known for a in archs):
        return []
    family = load_supported().family_for(model_type, [])
    native = ", ".join(family.architectures) if family else ""
    return [error("architecture-unknown-to-vllm",
                  f"{CONFIG} architectures {archs} names no class vLLM knows (model_type {model_type!r}; vLLM "
                  f"chooses the model class from architectures, not model_type, and refuses the folder). Set "
                  f"architectures to {native}", CONFIG)]


def _deepseek_router(ckpt: Checkpoint) -> list[Finding]:
    """Two keys of a DeepSeek-V3 config that transformers ignores and vLLM obeys, as
    DeepSeek publishes them:

    * the router bias (``mlp.gate.e_score_correction_bias``, in every published
      checkpoint) is a parameter of vLLM's model only when the config says ``topk_method:
      "noaux_tc"``; without it vLLM stops the load with ``KeyError:
      'layers.1.mlp.gate.e_score_correction_bias'`` (seen with vLLM 0.32.0 on a DeepSeek-V3
      config transformers 5 wrote from its defaults, which leave it out), while
      transformers routes with the bias whatever the key says;
    * transformers' DeepSeek-V3 always scores experts with a sigmoid; vLLM reads
      ``scoring_func`` and takes softmax when it is absent: the same experts weighted
      otherwise, so other logits than the ones trained (vLLM 0.32.0, the same folder with
      and without the key: other logprobs, ``tests/vllm/mutations.py``)."""
    cfg = ckpt.text_config
    if cfg.get("model_type") != "deepseek_v3" or not cfg.get("n_routed_experts"):
        return []
    found: list[Finding] = []
    if cfg.get("scoring_func") != "sigmoid":
        found.append(error("router-scoring-not-sigmoid",
                           f"{CONFIG} scoring_func is {cfg.get('scoring_func')!r}: vLLM weighs DeepSeek-V3's experts "
                           "with it (softmax when absent), transformers always with a sigmoid, so vLLM would serve "
                           "other logits than the model computes. Set \"scoring_func\": \"sigmoid\" as DeepSeek "
                           "publishes it", CONFIG))
    held = next((n for n in ckpt.tensors if n.endswith("mlp.gate.e_score_correction_bias")), None)
    if held is not None and cfg.get("topk_method") != "noaux_tc":
        found.append(error("router-bias-without-noaux-tc",
                           f"{CONFIG} topk_method is {cfg.get('topk_method')!r}, but the weights hold {held}: vLLM's "
                           "DeepSeek-V3 has that router bias only with topk_method \"noaux_tc\" and refuses the load "
                           "(KeyError). Set \"topk_method\": \"noaux_tc\" as DeepSeek publishes it", CONFIG))
    return found


# Model types whose transformers config keeps rope_parameters per layer type
# ({"full_attention": {...}, "sliding_attention": {...}}) and fills a layer type it does not
# find with the default rope: settings given flat are not read by transformers, nor by vLLM,
# which builds its rope from that config (vLLM 0.32.0 served a Gemma-3 text model with an
# unknown flat rope_type exactly as without it). The legacy rope_scaling still applies
# (to full attention).
PER_LAYER_TYPE_ROPE = frozenset({"gemma3_text"})


def _rope_dicts(doc: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(where, rope settings) for the top level and text_config, per layer type when nested;
    and where flat settings sit that the model type does not read (``PER_LAYER_TYPE_ROPE``)."""
    out: list[tuple[str, dict[str, Any]]] = []
    unread: list[str] = []
    for where, layer in (("", doc), ("text_config.", doc.get("text_config"))):
        if not isinstance(layer, dict):
            continue
        per_layer_type = layer.get("model_type") in PER_LAYER_TYPE_ROPE
        for key in ("rope_parameters", "rope_scaling"):
            value = layer.get(key)
            if not isinstance(value, dict):
                continue
            flat = [k for k, v in value.items() if not isinstance(v, dict) and v is not None]
            read_per_layer_type = per_layer_type and key == "rope_parameters"
            if read_per_layer_type or (value and not flat):  # per layer type
                out += [(f"{where}{key}.{k}", v) for k, v in value.items() if isinstance(v, dict)]
                if read_per_layer_type and flat:
                    unread.append(f"{where}{key}")
            else:
                out.append((f"{where}{key}", value))
    return out, unread


def _rope(doc: dict[str, Any]) -> list[Finding]:
    types: dict[str, list[str]] = {k: v for k, v in engines.engines_doc()["rope_types"].items() if k != "notes"}
    dicts, unread = _rope_dicts(doc)
    found: list[Finding] = [warning("rope-not-read",
                                    f"{CONFIG} {where} holds rope settings outside its layer types, which "
                                    f"{doc.get('model_type')!r} reads per layer type (full_attention, "
                                    "sliding_attention): transformers and vLLM ignore them and use the default "
                                    "rope. Put them under the layer type they are for", CONFIG) for where in unread]
    for where, rope in dicts:
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if not isinstance(rope_type, str) or rope_type not in types:
            found.append(error("rope-unreadable", f"{CONFIG} {where}: rope_type {rope_type!r} is no RoPE type "
                                                  "transformers or vLLM builds (vLLM refuses: Unknown RoPE scaling "
                                                  f"type); known: {', '.join(sorted(types))}", CONFIG))
            continue
        missing = [k for k in types[rope_type] if k not in rope]
        if missing:
            found.append(error("rope-unreadable", f"{CONFIG} {where}: rope_type {rope_type!r} without "
                                                  f"{', '.join(missing)}, which define it; transformers refuses "
                                                  "the config (KeyError) and so does vLLM", CONFIG))
    return found


def _newer_than_target(doc: dict[str, Any], target: engines.Target) -> list[Finding]:
    have = engines.version_tuple(target.transformers)
    table = engines.engines_doc()
    writer = doc.get("transformers_version") if isinstance(doc.get("transformers_version"), str) else None
    written = f" (written by transformers {writer})" if writer else ""
    found: list[Finding] = []
    types = {t for t in (doc.get("model_type"), (doc.get("text_config") or {}).get("model_type")
                         if isinstance(doc.get("text_config"), dict) else None) if isinstance(t, str)}
    for model_type in sorted(types):
        since = table["model_types_since"].get(model_type)
        if since and engines.version_tuple(since) > have:
            found.append(warning("config-newer-than-target",
                                 f"{CONFIG}{written}: model_type {model_type!r} was added in transformers {since}; the "
                                 f"target {target.name} may run an older transformers that does not know it. Serve "
                                 f"with a newer vLLM, or validate with --target-vllm for the one you deploy", CONFIG))
    layers = [doc] + ([doc["text_config"]] if isinstance(doc.get("text_config"), dict) else [])
    for rule in table["keys_since"]:
        applies = rule["model_types"] == "*" or bool(types & set(rule["model_types"]))
        if applies and engines.version_tuple(rule["transformers"]) > have and any(rule["key"] in d for d in layers):
            found.append(warning("config-newer-than-target",
                                 f"{CONFIG}{written} uses {rule['key']} (transformers >= {rule['transformers']}); the "
                                 f"target {target.name} may run a transformers that {rule['older']}. Serve with a "
                                 "newer vLLM, or save the config with the target's transformers", CONFIG))
    return found
