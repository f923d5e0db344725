"""PEFT trainable tokens (``trainable_token_indices``): rows of the embedding trained on
their own, as TRL does for added special tokens without training the whole matrix.

PEFT saves the trained rows (``…embed_tokens.token_adapter.trainable_tokens_delta``,
[n, dim]: the rows' new *values*, despite the name) and the indices in
``adapter_config.json``; its merge is ``W.index_copy(0, indices, rows)``, done here on
the base tensor (or on the embedding PEFT saved whole when the vocabulary was resized).
With tied embeddings the output layer is the same tensor, so it follows, as in PEFT.
"""

from __future__ import annotations

from typing import Any

from tune2serve.components.errors import MergeError

_SUFFIX = ".token_adapter.trainable_tokens_delta"


def split_token_rows(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the other adapter tensors, {module path: trained rows})."""
    rest: dict[str, Any] = {}
    rows: dict[str, Any] = {}
    for key, tensor in tensors.items():
        if key.endswith(_SUFFIX):
            module = key[: -len(_SUFFIX)].removeprefix("base_model.model.")
            rows[module] = tensor
        else:
            rest[key] = tensor
    return rest, rows


def _indices(spec: Any, module: str, label: str) -> list[int]:
    if isinstance(spec, list):
        return [int(i) for i in spec]
    if isinstance(spec, dict):
        for name, value in spec.items():
            if module == name or module.endswith("." + name):
                return [int(i) for i in value]
    raise MergeError(f"{label}: the adapter trains token rows of {module}, but trainable_token_indices in "
                     f"adapter_config.json ({spec!r}) names no indices for it")


def apply_token_rows(rows: dict[str, Any], spec: Any, adapter: Any, base: dict[str, Any], read_base: Any,
                     disk_name: Any, label: str) -> None:
    """Writes each module's trained rows into its weight, as a replacement tensor."""
    if not rows:
        return
    import torch

    for module, values in rows.items():
        target = f"{module}.weight"
        if target not in base and f"model.{target}" in base:
            target = f"model.{target}"
        if target not in base:
            target = disk_name(target) or target
        if target not in base and target not in adapter.replacements:
            raise MergeError(f"{label}: the adapter trains token rows of {module}, but the base model has no "
                             f"tensor {target}; the adapter was trained on a different base model")
        if target in adapter.deltas:
            raise MergeError(f"{label}: {module} has both a LoRA and trainable token rows, whose merge order export "
                             "cannot reproduce; merge with PEFT and export the merged folder")
        index = _indices(spec, module, label)
        weight = adapter.replacements.get(target)
        weight = (weight if weight is not None else read_base(target)).float().clone()
        if values.shape != (len(index), weight.shape[1]) or max(index, default=-1) >= weight.shape[0]:
            raise MergeError(f"{label}: trainable token rows {list(values.shape)} for indices {index[:8]}… do not fit "
                             f"{target} {list(weight.shape)}")
        adapter.replacements[target] = weight.index_copy(0, torch.tensor(index), values.float())
