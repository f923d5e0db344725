"""Serving memory (``validate.memory``) against the requested machine spec (``vertex.machine_spec``)."""

from __future__ import annotations

from tune2serve.components.validate.context import Checkpoint
from tune2serve.components.validate.findings import Finding, error, info, warning
from tune2serve.components.validate.memory import (
    human_bytes,
    KV_CONCURRENT_SEQUENCES,
    KV_CONTEXT_TOKENS,
    estimate_serving_memory,
)
from tune2serve.components.vertex.machine_spec import GIB, fits, recommend_machine_spec


def check_memory(ckpt: Checkpoint) -> list[Finding]:
    if ckpt.config_doc is None:
        return []
    if ckpt.tensors:
        weights = ckpt.serving_weight_bytes()
    else:
        weights = 2 * int(ckpt.summary.get("parameters") or 0)
    if not weights:
        return []
    est = estimate_serving_memory(weights, ckpt.text_config)
    recommended = recommend_machine_spec(est.total_bytes)
    spec = ckpt.options.machine_spec
    ckpt.summary.update(
        serving_memory_bytes=est.total_bytes,
        serving_memory_gb=round(est.total_bytes / GIB, 3),
        serving_weights_gb=round(est.weight_bytes / GIB, 2),
        kv_cache_gb=round(est.kv_cache_bytes / GIB, 2),
        machine_spec=spec.to_dict() if spec else None,
        machine_spec_usable_gb=round(spec.usable_bytes() / GIB, 2) if spec else None,
        recommended_machine_spec=recommended.to_dict() if recommended else None,
    )
    need = (f"needs about {human_bytes(est.total_bytes)} on GPU ({human_bytes(est.weight_bytes)} weights in bf16 + "
            f"{human_bytes(est.kv_cache_bytes)} KV cache for {KV_CONCURRENT_SEQUENCES} × {KV_CONTEXT_TOKENS} tokens)")
    suggestion = f"the smallest spec that fits is {recommended}" if recommended else \
        "no single-host spec up to 8 × H100 80 GB holds it"
    if spec is None:
        if recommended is None:
            return [warning("memory-no-spec-fits", f"the model {need}; {suggestion}")]
        return [info("memory-recommendation", f"the model {need}; {suggestion}")]
    if fits(spec, est.total_bytes):
        return [info("memory-fits", f"the model {need}; {spec} offers {human_bytes(spec.usable_bytes())} usable")]
    return [error("memory-exceeds-spec", f"the model {need} but {spec} offers {human_bytes(spec.usable_bytes())} "
                                         f"usable (90% of GPU memory less per-GPU overhead); {suggestion}")]
