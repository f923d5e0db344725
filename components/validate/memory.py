"""Serving memory: how much GPU memory a checkpoint needs on vLLM, and which Vertex AI
machine spec holds it.

The estimate (documented in POLICY.md):

    needed = weights + KV cache
    weights  = float tensors at 2 bytes per parameter (vLLM serves F32 checkpoints in
               bf16) + every other tensor (FP8, packed MXFP4) at its stored size
    KV cache = KV_CACHE_TOKENS (4096-token context × 4 concurrent sequences) × bytes per
               token (2 × layers × kv_heads × head_dim × 2 bytes; MLA models:
               layers × (kv_lora_rank + qk_rope_head_dim) × 2 bytes)

A spec fits when ``needed + count × OVERHEAD_PER_GPU <= GPU_MEMORY_UTILIZATION × count ×
memory per GPU`` (vLLM's default ``gpu_memory_utilization`` is 0.9; the per-GPU overhead
stands for the CUDA context, activations and CUDA graphs). The deploy step reuses
``recommend_machine_spec`` and ``parse_machine_spec``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tune2serve.components.errors import UsageError
from tune2serve.components.validate.architectures import head_dim, kv_heads

GIB = 1024**3
GPU_MEMORY_UTILIZATION = 0.9
OVERHEAD_PER_GPU = int(1.5 * GIB)
KV_CONTEXT_TOKENS = 4096
KV_CONCURRENT_SEQUENCES = 4
KV_CACHE_TOKENS = KV_CONTEXT_TOKENS * KV_CONCURRENT_SEQUENCES
KV_BYTES_PER_VALUE = 2  # bf16 cache


@dataclass(frozen=True)
class Accelerator:
    """One GPU kind as Vertex AI names it; ``rank`` orders kinds by hourly price."""

    name: str
    label: str
    memory_bytes: int
    rank: int


ACCELERATORS: dict[str, Accelerator] = {
    "NVIDIA_L4": Accelerator("NVIDIA_L4", "L4 24 GB", 24 * GIB, 0),
    "NVIDIA_TESLA_A100": Accelerator("NVIDIA_TESLA_A100", "A100 40 GB", 40 * GIB, 1),
    "NVIDIA_A100_80GB": Accelerator("NVIDIA_A100_80GB", "A100 80 GB", 80 * GIB, 2),
    "NVIDIA_H100_80GB": Accelerator("NVIDIA_H100_80GB", "H100 80 GB", 80 * GIB, 3),
}

# machine type → (accelerator type, the accelerator count it carries)
MACHINE_TYPES: dict[str, tuple[str, int]] = {
    **{f"g2-standard-{n}": ("NVIDIA_L4", 1) for n in (4, 8, 12, 16, 32)},
    "g2-standard-24": ("NVIDIA_L4", 2),
    "g2-standard-48": ("NVIDIA_L4", 4),
    "g2-standard-96": ("NVIDIA_L4", 8),
    **{f"a2-highgpu-{n}g": ("NVIDIA_TESLA_A100", n) for n in (1, 2, 4, 8)},
    **{f"a2-ultragpu-{n}g": ("NVIDIA_A100_80GB", n) for n in (1, 2, 4, 8)},
    **{f"a3-highgpu-{n}g": ("NVIDIA_H100_80GB", n) for n in (1, 2, 4, 8)},
}

# The one machine type recommended for each (accelerator, count).
_CANONICAL: dict[tuple[str, int], str] = {
    ("NVIDIA_L4", 1): "g2-standard-12", ("NVIDIA_L4", 2): "g2-standard-24",
    ("NVIDIA_L4", 4): "g2-standard-48", ("NVIDIA_L4", 8): "g2-standard-96",
    **{("NVIDIA_TESLA_A100", n): f"a2-highgpu-{n}g" for n in (1, 2, 4, 8)},
    **{("NVIDIA_A100_80GB", n): f"a2-ultragpu-{n}g" for n in (1, 2, 4, 8)},
    **{("NVIDIA_H100_80GB", n): f"a3-highgpu-{n}g" for n in (1, 2, 4, 8)},
}


@dataclass(frozen=True)
class MachineSpec:
    """A Vertex AI ``machine_spec``: the three fields set together."""

    machine_type: str
    accelerator_type: str
    accelerator_count: int

    @property
    def accelerator(self) -> Accelerator:
        return ACCELERATORS[self.accelerator_type]

    @property
    def gpu_memory_bytes(self) -> int:
        return self.accelerator.memory_bytes * self.accelerator_count

    def usable_bytes(self) -> int:
        """What a model may need on this spec: 90% of GPU memory minus per-GPU overhead."""
        return int(GPU_MEMORY_UTILIZATION * self.gpu_memory_bytes) - self.accelerator_count * OVERHEAD_PER_GPU

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.machine_type} with {self.accelerator_count} × {self.accelerator.label}"


def parse_machine_spec(machine_type: str | None, accelerator_type: str | None,
                       accelerator_count: int | None) -> MachineSpec | None:
    """The spec named by the three flags, or None when none is given.

    Raises:
        UsageError: only some of the three are given, or they do not name a machine
            Vertex AI offers (unknown type, wrong accelerator or count for the type).
    """
    given = [v not in (None, "", 0) for v in (machine_type, accelerator_type, accelerator_count)]
    if not any(given):
        return None
    if not all(given):
        raise UsageError("--machine-type, --accelerator-type and --accelerator-count are set together or not at all "
                         "(for example --machine-type g2-standard-12 --accelerator-type NVIDIA_L4 --accelerator-count 1)")
    assert machine_type and accelerator_type and accelerator_count
    if machine_type not in MACHINE_TYPES:
        raise UsageError(f"unknown machine type {machine_type!r}; known: {', '.join(sorted(MACHINE_TYPES))}")
    if accelerator_type not in ACCELERATORS:
        raise UsageError(f"unknown accelerator type {accelerator_type!r}; known: {', '.join(ACCELERATORS)}")
    want_type, want_count = MACHINE_TYPES[machine_type]
    if accelerator_type != want_type or accelerator_count != want_count:
        raise UsageError(f"{machine_type} carries {want_count} × {want_type}, not {accelerator_count} × {accelerator_type}")
    return MachineSpec(machine_type, accelerator_type, accelerator_count)


def candidate_specs() -> list[MachineSpec]:
    """Every recommendable spec: smallest GPU memory first, then fewest GPUs (no tensor
    parallelism when one GPU will do), then the cheapest GPU kind."""
    specs = [MachineSpec(m, a, n) for (a, n), m in _CANONICAL.items()]
    return sorted(specs, key=lambda s: (s.gpu_memory_bytes, s.accelerator_count, s.accelerator.rank))


def fits(spec: MachineSpec, bytes_needed: int) -> bool:
    return bytes_needed <= spec.usable_bytes()


def recommend_machine_spec(bytes_needed: int) -> MachineSpec | None:
    """The smallest spec that holds ``bytes_needed`` (weights + KV cache), or None when
    none of the single-host specs does."""
    return next((s for s in candidate_specs() if fits(s, bytes_needed)), None)


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
