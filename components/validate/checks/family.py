"""Architecture and size against the supported list (``supported_models.json``).

The family comes from ``model_type`` (or ``architectures``). The size is the parameter
count summed from the safetensors headers; for ``.bin`` weights it is estimated from
config.json (the pickle's shapes are not decoded) and an info finding says so. Policy:
an unsupported architecture is an error (deploy rejects it); a size not in the list is a
warning (an error with --strict).
"""

from __future__ import annotations

from typing import Any

from tune2serve.components.validate.context import CONFIG, Checkpoint
from tune2serve.components.validate.findings import Finding, error, info, warning
from tune2serve.components.validate.supported import load_supported


def check_family_and_size(ckpt: Checkpoint) -> list[Finding]:
    doc = ckpt.config_doc
    if doc is None:
        return []
    supported = load_supported()
    model_type = doc.get("model_type") if isinstance(doc.get("model_type"), str) else None
    archs = [a for a in doc.get("architectures") or [] if isinstance(a, str)]
    ckpt.summary.update(model_type=model_type, architectures=archs, supported_list_version=supported.version)
    params, source = _parameters(ckpt)
    ckpt.summary.update(parameters=params, parameters_source=source)
    found: list[Finding] = []
    if source == "config estimate" and params:
        found.append(info("params-estimated", f"parameter count {_b(params)} is estimated from {CONFIG} "
                                              "(.bin weights: shapes are not read from the pickle)", CONFIG))
    family = supported.family_for(model_type, archs)
    if family is None:
        known = sorted({t for f in supported.families for t in f.model_types})
        found.append(error("unsupported-architecture",
                           f"model_type {model_type!r} / architectures {archs} is not a base model Vertex AI deploys "
                           f"with custom weights (supported model types: {', '.join(known)}; list {supported.version})",
                           CONFIG))
        return found
    ckpt.summary["family"] = family.family
    match = supported.match_size(family, params) if params else None
    if match is None:
        sizes = ", ".join(f"{m.name} ({_b(m.params)})" for m in family.models)
        found.append(warning("size-not-listed",
                             f"{family.family} with {_b(params)} parameters matches no listed size within "
                             f"±{supported.size_tolerance:.0%}: {sizes}. Deploy may reject it", CONFIG))
    else:
        ckpt.summary["matched_model"] = match.name
        found.append(info("supported-model", f"{family.family} architecture, {_b(params)} parameters: "
                                             f"matches {match.name} ({_b(match.params)})", CONFIG))
    return found


def _parameters(ckpt: Checkpoint) -> tuple[int, str]:
    if ckpt.tensors:
        return ckpt.parameter_count(), "safetensors headers"
    return estimate_parameters(ckpt.text_config, ckpt.config_doc or {}), "config estimate"


def estimate_parameters(text: dict[str, Any], doc: dict[str, Any]) -> int:
    """A dense decoder's parameter count from its config (embeddings, attention, MLP,
    norms, untied head). Used only when the shapes cannot be read."""
    def n(key: str, default: int = 0) -> int:
        v = text.get(key, default)
        return v if isinstance(v, int) and not isinstance(v, bool) else default

    hidden, vocab, layers, inter = n("hidden_size"), n("vocab_size"), n("num_hidden_layers"), n("intermediate_size")
    heads = n("num_attention_heads", 1) or 1
    kv = n("num_key_value_heads", heads) or heads
    head_dim = n("head_dim", hidden // heads)
    attn = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    per_layer = attn + 3 * hidden * inter + 2 * hidden
    tied = doc.get("tie_word_embeddings", False) is True
    return vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden


def _b(params: int) -> str:
    if params >= 10**9:
        return f"{params / 1e9:.2f}B"
    if params >= 10**6:
        return f"{params / 1e6:.2f}M"
    return f"{params:,}"
