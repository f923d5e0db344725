"""Serving memory: how much GPU memory a checkpoint needs on vLLM.

The estimate (documented in POLICY.md):

    needed = weights + KV cache
    weights  = float tensors at 2 bytes per parameter (vLLM serves F32 checkpoints in
               bf16) + every other tensor (FP8, packed MXFP4) at its stored size
    KV cache = KV_CACHE_TOKENS (4096-token context × 4 concurrent sequences) × bytes per
               token (2 × layers × kv_heads × head_dim × 2 bytes; MLA models:
               layers × (kv_lora_rank + qk_rope_head_dim) × 2 bytes)

Which machine spec holds it, the catalogue and the fit rule are the one MachineSpec
module's (``components/vertex/machine_spec.py``), shared with deploy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tune2serve.components.validate.architectures import head_dim, kv_heads

KV_CONTEXT_TOKENS = 4096
KV_CONCURRENT_SEQUENCES = 4
KV_CACHE_TOKENS = KV_CONTEXT_TOKENS * KV_CONCURRENT_SEQUENCES
KV_BYTES_PER_VALUE = 2  # bf16 cache


@dataclass(frozen=True)
class MemoryEstimate:
    weight_bytes: int
    kv_cache_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_cache_bytes


def kv_bytes_per_token(config: dict[str, Any]) -> int:
    """KV-cache bytes per token from a (text) config; 0 when the config lacks the sizes.
    Pass ``architectures.effective_text_config(doc)``: absent keys are class defaults
    (Gemma-3's head_dim 256), not hidden / heads."""
    layers = _int(config.get("num_hidden_layers"))
    if not layers:
        return 0
    if _int(config.get("kv_lora_rank")):  # multi-head latent attention (DeepSeek)
        latent = _int(config.get("kv_lora_rank")) + _int(config.get("qk_rope_head_dim"))
        return layers * latent * KV_BYTES_PER_VALUE
    return 2 * layers * kv_heads(config) * head_dim(config) * KV_BYTES_PER_VALUE


def estimate_serving_memory(weight_bytes: int, text_config: dict[str, Any]) -> MemoryEstimate:
    return MemoryEstimate(weight_bytes, kv_bytes_per_token(text_config) * KV_CACHE_TOKENS)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def human_bytes(n: int | float) -> str:
    """1.5 GiB, 12.0 MiB, 800 B: what a person reads in a report."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
