"""The checks, in the order they run. Each is ``check(ckpt) -> list[Finding]``; later
checks read what earlier ones loaded (the weights check parses the headers)."""

from __future__ import annotations

from collections.abc import Callable

from tune2serve.components.validate.checks import (
    base_model,
    checksums,
    config,
    config_bounds,
    engine,
    family,
    files,
    memory,
    pickles,
    quantization,
    secrets,
    shapes,
    stop_tokens,
    tensors,
    tokenizer,
    values,
    weights,
)
from tune2serve.components.validate.context import Checkpoint
from tune2serve.components.validate.findings import Finding

Check = Callable[[Checkpoint], list[Finding]]

CHECKS: list[tuple[str, Check]] = [
    ("files", files.check_files),
    ("config", config.check_config),
    ("config-bounds", config_bounds.check_config_bounds),
    ("weights", weights.check_weights),
    ("pickles", pickles.check_pickles),
    ("family", family.check_family_and_size),
    ("quantization", quantization.check_quantization),
    ("shapes", shapes.check_shapes),
    ("tensors", tensors.check_tensors),
    ("engine", engine.check_engine),
    ("tokenizer", tokenizer.check_tokenizer),
    ("stop-tokens", stop_tokens.check_stop_tokens),
    ("memory", memory.check_memory),
    ("checksums", checksums.check_checksums),
    ("base-model", base_model.check_base_model),
    ("secrets", secrets.check_secrets),
    ("values", values.check_values),
]
