"""The one Vertex AI machine spec: the three flags parsed and normalised, the catalogue of
machine types and their GPUs, and the memory fit. validate checks serving memory against
it, deploy sends it, and the pipeline hands the same three parameters to both, so all of
them read the flags by one rule.

**Input rule** (CLI flags and pipeline parameters alike): the three are given together or
not at all; names are case-insensitive and written either way Google writes them, and
are normalised to Vertex AI's own names before anything else sees them —

- accelerator type → the ``AcceleratorType`` enum name: ``nvidia_l4``, ``NVIDIA_L4`` and
  ``nvidia-l4`` (gcloud's spelling) are all ``NVIDIA_L4``;
- machine type → lower case: ``G2-STANDARD-12`` is ``g2-standard-12``;
- accelerator count → 1, 2, 4 or 8.

An explicit spec must name a machine of the catalogue below, with the GPUs that machine
carries: a spec whose memory cannot be checked, or that Vertex AI would refuse, is
refused here (exit 2) rather than after the GPUs are provisioned. Specs Vertex AI itself
recommends are taken as they come (``MachineSpec(...)`` directly; ``known`` says whether
the catalogue can size them).

**Memory fit** (documented in components/validate/POLICY.md): a spec holds a model that
needs ``needed`` bytes (weights + KV cache, ``validate.memory``) when ``needed + count ×
OVERHEAD_PER_GPU <= GPU_MEMORY_UTILIZATION × count × memory per GPU`` — vLLM's default
``gpu_memory_utilization`` is 0.9; the per-GPU overhead stands for the CUDA context,
activations and CUDA graphs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tune2serve.components.errors import UsageError

GIB = 1024**3
GPU_MEMORY_UTILIZATION = 0.9
OVERHEAD_PER_GPU = int(1.5 * GIB)
ACCELERATOR_COUNTS = (1, 2, 4, 8)
EXAMPLE = "--machine-type g2-standard-12 --accelerator-type NVIDIA_L4 --accelerator-count 1"


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
    """A Vertex AI ``machine_spec``: the three fields set together, in Vertex's names."""

    machine_type: str
    accelerator_type: str
    accelerator_count: int

    @property
    def known(self) -> bool:
        """Whether the catalogue knows the GPU, so its memory can be checked."""
        return self.accelerator_type in ACCELERATORS

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
        """The ``machine_spec`` fields of Vertex's request (and of validate's summary)."""
        return asdict(self)

    def __str__(self) -> str:
        gpu = self.accelerator.label if self.known else self.accelerator_type
        return f"{self.machine_type} with {self.accelerator_count} × {gpu}"


def normalize_accelerator_type(text: str) -> str:
    """``nvidia_l4``, ``NVIDIA_L4``, `` nvidia-l4 `` → ``NVIDIA_L4`` (Vertex's enum name)."""
    return text.strip().upper().replace("-", "_")


def normalize_machine_type(text: str) -> str:
    """``G2-STANDARD-12`` → ``g2-standard-12`` (Vertex's machine type names are lower case)."""
    return text.strip().lower()


def parse_machine_spec(machine_type: str | None, accelerator_type: str | None,
                       accelerator_count: int | None) -> MachineSpec | None:
    """The spec named by the three flags (or pipeline parameters), normalised; None when
    none is given ("" and 0 mean not given, as in the pipeline).

    Raises:
        UsageError: only some of the three are given, the count is not 1, 2, 4 or 8, or
            they do not name a machine of the catalogue (unknown machine type or
            accelerator, or not the GPUs that machine carries).
    """
    given = {"--machine-type": machine_type, "--accelerator-type": accelerator_type,
             "--accelerator-count": accelerator_count}
    present = [flag for flag, value in given.items() if value not in (None, "", 0)]
    if not present:
        return None
    if len(present) < len(given):
        missing = ", ".join(flag for flag in given if flag not in present)
        raise UsageError(f"machine type, accelerator type and accelerator count go together: {', '.join(present)} "
                         f"given without {missing}; they are set together or not at all (for example {EXAMPLE}; "
                         "none: the spec Vertex AI recommends)")
    count = int(accelerator_count or 0)
    if count not in ACCELERATOR_COUNTS:
        raise UsageError(f"--accelerator-count {count}: must be 1, 2, 4 or 8")
    machine, accelerator = normalize_machine_type(str(machine_type)), normalize_accelerator_type(str(accelerator_type))
    if machine not in MACHINE_TYPES:
        raise UsageError(f"unknown machine type {machine_type!r}; known: {', '.join(sorted(MACHINE_TYPES))}")
    if accelerator not in ACCELERATORS:
        raise UsageError(f"unknown accelerator type {accelerator_type!r}; known: {', '.join(ACCELERATORS)}")
    want_type, want_count = MACHINE_TYPES[machine]
    if accelerator != want_type or count != want_count:
        raise UsageError(f"{machine} carries {want_count} × {want_type}, not {count} × {accelerator}")
    return MachineSpec(machine, accelerator, count)


def candidate_specs() -> list[MachineSpec]:
    """Every recommendable spec: smallest GPU memory first, then fewest GPUs (no tensor
    parallelism when one GPU will do), then the cheapest GPU kind."""
    specs = [MachineSpec(m, a, n) for (a, n), m in _CANONICAL.items()]
    return sorted(specs, key=lambda s: (s.gpu_memory_bytes, s.accelerator_count, s.accelerator.rank))


def fits(spec: MachineSpec, bytes_needed: int) -> bool:
    """Whether ``spec`` holds ``bytes_needed`` (weights + KV cache); the catalogue must
    know its GPU (``spec.known``)."""
    return bytes_needed <= spec.usable_bytes()


def recommend_machine_spec(bytes_needed: int) -> MachineSpec | None:
    """The smallest spec that holds ``bytes_needed`` (weights + KV cache), or None when
    none of the single-host specs does."""
    return next((s for s in candidate_specs() if fits(s, bytes_needed)), None)


__all__ = [
    "ACCELERATORS",
    "ACCELERATOR_COUNTS",
    "GIB",
    "GPU_MEMORY_UTILIZATION",
    "MACHINE_TYPES",
    "OVERHEAD_PER_GPU",
    "Accelerator",
    "MachineSpec",
    "candidate_specs",
    "fits",
    "normalize_accelerator_type",
    "normalize_machine_type",
    "parse_machine_spec",
    "recommend_machine_spec",
]
