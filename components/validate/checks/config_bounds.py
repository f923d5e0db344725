"""Size fields of ``config.json`` within what any real model has, checked before the
shape checks use them: ``num_hidden_layers`` of 10⁹ made validate build a set of a
billion layer numbers and run out of memory. A value outside its bound is an error
naming the key; the shape checks then stand down (``plausible``)."""

from __future__ import annotations

from typing import Any

from tune2serve.components.validate.context import Checkpoint
from tune2serve.components.validate.findings import Finding, error

# Generous upper bounds (the largest published models are far below each).
LIMITS = {
    "num_hidden_layers": 10_000, "num_attention_heads": 65_536, "num_key_value_heads": 65_536,
    "hidden_size": 1 << 20, "intermediate_size": 1 << 22, "moe_intermediate_size": 1 << 22, "head_dim": 1 << 16,
    "vocab_size": 1 << 24, "max_position_embeddings": 1 << 31, "num_experts": 1 << 16, "num_local_experts": 1 << 16,
    "n_routed_experts": 1 << 16, "num_experts_per_tok": 1 << 16, "num_nextn_predict_layers": 1_000,
}


def problems(cfg: dict[str, Any] | None) -> list[tuple[str, object]]:
    """(key, value) of each size field that is not an integer in [0, its limit]."""
    if not isinstance(cfg, dict):
        return []
    found = []
    for key, limit in LIMITS.items():
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            found.append((key, value))
    return found


def plausible(ckpt: Checkpoint) -> bool:
    return not problems(ckpt.config_doc) and not problems(ckpt.text_config)


def check_config_bounds(ckpt: Checkpoint) -> list[Finding]:
    seen = {}
    for cfg in (ckpt.config_doc, ckpt.text_config):
        for key, value in problems(cfg):
            seen.setdefault(key, value)
    return [error("config-value-out-of-range", f"config.json: {key} = {str(value)[:40]} is not an integer between 0 and "
                                               f"{LIMITS[key]:,}; no real model has that", "config.json")
            for key, value in seen.items()]
