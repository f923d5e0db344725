"""Merging a PEFT LoRA adapter into its base, one base tensor at a time.

The adapter (small: A/B matrices, DoRA magnitudes, ``modules_to_save`` tensors) is read
whole; the base is never materialised: ``merged(name, base_tensor)`` is called for each
base tensor as it streams past and returns the tensor to write. The maths follows PEFT's
``merge_and_unload`` (peft 0.17–0.21), computed in float32 and cast once at the end:

* ΔW = B @ A · scaling, scaling = lora_alpha / r, or lora_alpha / √r with ``use_rslora``;
  r and alpha per module from ``rank_pattern`` / ``alpha_pattern`` (PEFT's own rule: the
  pattern matches the end of the module name at a dot boundary);
* ``fan_in_fan_out`` (GPT-2's Conv1D stores weights as in×out): ΔW is transposed;
* embeddings: ``lora_embedding_A`` (r×vocab), ``lora_embedding_B`` (dim×r), ΔW = (B@A)ᵀ;
* DoRA: W' = m · (W + ΔW) / ‖W + ΔW‖, the norm taken per output feature (per row of a
  Linear weight, per column of an embedding or a Conv1D weight);
* ``modules_to_save`` and saved base layers (``…base_layer.weight``, written by PEFT when
  it saves resized embeddings; ``…base_layer.bias`` with ``bias="lora_only"``/``"all"``)
  replace the base tensor whole;
* ``lora_bias=True``: b' = b + scaling · lora_B.bias, added to the (possibly replaced)
  base bias; a layer without a bias is refused, as PEFT's own merge refuses it.

Keys: ``base_model.model.<module>.lora_A.weight`` belongs to base tensor
``<module>.weight``. Anything the merge does not understand is refused with its name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.checkpoint.bin_loader import load_state_dict
from tune2serve.components.checkpoint.storage import LocalFolder
from tune2serve.components.checkpoint.tensor_reader import FLOAT_NAMES, TensorMeta, dtype_name, torch_dtype
from tune2serve.components.errors import MergeError
from tune2serve.components.export.plan.adapter_config import check_values, pattern_value
from tune2serve.components.export.merge.finite import FLOAT_LIMITS, refusal
from tune2serve.components.export.merge.moe import is_param_lora
from tune2serve.components.export.source.producers import check_adapter_config, check_gathered

ADAPTER_CONFIG = "adapter_config.json"
_PREFIX = "base_model.model."
_UNSUPPORTED_OPTIONS = {
    "layer_replication": "layer_replication",
    "use_qalora": "use_qalora",
}


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``get_pattern_key``, time-bounded (``adapter_config.pattern_value``)."""
    return pattern_value(patterns, module, default)


@dataclass(frozen=True)
class LoraOptions:
    """The merge-relevant part of ``adapter_config.json``."""

    r: int
    lora_alpha: float
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    modules_to_save: list[str] = field(default_factory=list)
    base_model_name_or_path: str | None = None
    trainable_token_indices: Any = None  # list, or {module: list}: see tokens.py

    @classmethod
    def from_config(cls, doc: dict[str, Any], file: str = ADAPTER_CONFIG) -> LoraOptions:
        peft_type = str(doc.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise MergeError(f"{file}: peft_type {peft_type} cannot be merged by export; only LoRA (and DoRA) adapters can", file=file)
        check_adapter_config(doc, file)  # residual-base inits, parameter-level LoRA: refused by name
        check_values(doc, file)  # ranks, alphas, switches, patterns: typed before anything merges
        for key, what in _UNSUPPORTED_OPTIONS.items():
            if doc.get(key):
                raise MergeError(f"{file}: the adapter uses {what}, which export cannot merge; merge it with PEFT "
                                 "(merge_and_unload + save_pretrained) and export the merged folder", file=file)
        try:
            return cls(
                r=int(doc["r"]),
                lora_alpha=float(doc.get("lora_alpha", 8)),
                use_rslora=bool(doc.get("use_rslora", False)),
                use_dora=bool(doc.get("use_dora", False)),
                fan_in_fan_out=bool(doc.get("fan_in_fan_out", False)),
                rank_pattern=dict(doc.get("rank_pattern") or {}),
                alpha_pattern=dict(doc.get("alpha_pattern") or {}),
                modules_to_save=list(doc.get("modules_to_save") or []),
                base_model_name_or_path=doc.get("base_model_name_or_path") or None,
                trainable_token_indices=doc.get("trainable_token_indices"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MergeError(f"{file}: not a LoRA adapter config ({type(e).__name__}: {e})", file=file) from e

    def rank(self, module: str) -> int:
        return int(_pattern_value(self.rank_pattern, module, self.r))

    def scaling(self, module: str) -> float:
        r = self.rank(module)
        alpha = float(_pattern_value(self.alpha_pattern, module, self.lora_alpha))
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    def summary(self) -> dict[str, Any]:
        """The merge options, for ``--json`` and the KFP artifact's metadata."""
        return {"r": self.r, "lora_alpha": self.lora_alpha, "use_rslora": self.use_rslora, "use_dora": self.use_dora,
                "fan_in_fan_out": self.fan_in_fan_out, "rank_pattern": self.rank_pattern,
                "alpha_pattern": self.alpha_pattern, "modules_to_save": self.modules_to_save}


@dataclass
class ModuleDelta:
    """The LoRA update of one base tensor; its matrices are float32 numpy arrays (the
    row merge needs no torch; ``merged`` wraps them in tensors without a copy)."""

    module: str
    embedding: bool
    A: Any = None
    B: Any = None
    magnitude: Any = None
    scaling: float = 1.0


@dataclass
class AdapterPlan:
    options: LoraOptions
    deltas: dict[str, ModuleDelta]       # base tensor name → update
    replacements: dict[str, Any]         # base tensor name → whole new tensor
    experts: Any = None                  # moe.ExpertDeltas: fused-expert LoRA, merged as it is written
    bias_deltas: dict[str, Any] = field(default_factory=dict)  # base bias name → scaling · lora_B.bias (float32)

    def touches(self, name: str) -> bool:
        return name in self.deltas or name in self.replacements or name in self.bias_deltas


def read_adapter(root: Path, label: str) -> tuple[LoraOptions, dict[str, Any]]:
    """The adapter's options and tensors from a local adapter folder: float32 numpy
    arrays when the file holds LoRA matrices only (``lora_matrices_only``), so that the
    plan and the row merge need no torch; torch tensors otherwise."""
    try:
        options = LoraOptions.from_config(bounded_json.read_object(LocalFolder(root), ADAPTER_CONFIG),
                                          f"{label}/{ADAPTER_CONFIG}")
    except (OSError, ValueError) as e:
        if isinstance(e, (MergeError, bounded_json.JsonLimitError)):
            raise
        raise MergeError(f"{label}/{ADAPTER_CONFIG}: cannot be read: {e}", file=ADAPTER_CONFIG) from e
    st = root / "adapter_model.safetensors"
    if st.is_file():
        from tune2serve.components.checkpoint.tensor_reader import SafetensorsFile

        checked = SafetensorsFile(st, f"{label}/adapter_model.safetensors")  # header checked before loading
        try:
            if lora_matrices_only(checked.metas):  # the common adapter: read without torch (float32 arrays)
                tensors = {name: checked.read_float32(name) for name in checked.metas}
            else:
                from safetensors.torch import load_file

                tensors = load_file(str(st))
        finally:
            checked.close()
    else:
        st = root / "adapter_model.bin"
        tensors = load_state_dict(st, f"{label}/adapter_model.bin")
    check_gathered(tensors, f"{label}/{st.name}")  # ZeRO-3 without gathering: empty, would export the base
    return options, tensors


def lora_matrices_only(metas: dict[str, TensorMeta]) -> bool:
    """True when every tensor of an adapter file is a floating LoRA matrix (A, B, an
    embedding's A/B, a DoRA magnitude) of a module: what plan_adapter and the row merge
    take as float32 arrays. Anything else (saved modules, biases, fused-expert LoRA,
    token rows, a key it cannot place) keeps the torch read, and its own checks."""
    try:
        return all(meta.dtype in FLOAT_NAMES and not is_param_lora(name)
                   and _split_key(name)[1] in ("A", "B", "eA", "eB", "m") for name, meta in metas.items())
    except MergeError:
        return False


def adapter_needs_torch(root: Path, label: str) -> bool:
    """True when ``read_adapter`` will read the adapter in ``root`` with torch: a
    ``.bin`` adapter, or one with more than LoRA matrices (``lora_matrices_only``)."""
    from tune2serve.components.checkpoint.tensor_reader import SafetensorsFile

    st = root / "adapter_model.safetensors"
    if not st.is_file():
        return True
    checked = SafetensorsFile(st, f"{label}/adapter_model.safetensors")
    try:
        return not lora_matrices_only(checked.metas)
    finally:
        checked.close()


def float32_array(tensor: Any) -> Any:
    """A LoRA matrix as a C-contiguous float32 numpy array, whichever reader read it."""
    import numpy as np

    if isinstance(tensor, np.ndarray):
        return np.ascontiguousarray(tensor, dtype=np.float32)
    return np.ascontiguousarray(tensor.detach().float().numpy())


def _split_key(key: str) -> tuple[str, str]:
    """(module or tensor path, part) where part is A, B, Bb (lora_B's bias), eA, eB, m, full or skip."""
    name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
    for suffix, part in ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".lora_B.bias", "Bb"), (".lora_embedding_A", "eA"),
                         (".lora_embedding_B", "eB"), (".lora_magnitude_vector.weight", "m"),
                         (".lora_magnitude_vector", "m")):
        if name.endswith(suffix):
            return name[: -len(suffix)], part
    if ".lora_" in name or "token_adapter" in name or "trainable_tokens" in name:
        raise MergeError(f"adapter tensor {key!r} is of a kind export cannot merge; merge with PEFT and export the result")
    parts = [p for p in name.split(".") if p != "base_layer"]
    if "original_module" in parts:  # the untrained copy PEFT keeps beside modules_to_save
        return name, "skip"
    if "modules_to_save" in parts:
        i = parts.index("modules_to_save")
        rest = parts[i + 1:]
        parts = parts[:i] + (rest[1:] if len(rest) > 1 else rest)
    return ".".join(parts), "full"


def plan_adapter(options: LoraOptions, tensors: dict[str, Any], base: dict[str, TensorMeta], label: str,
                 disk_name: Callable[[str], str | None] | None = None) -> AdapterPlan:
    """Maps every adapter tensor onto a base tensor and checks that the shapes fit, so
    that a wrong base fails before anything is written. ``disk_name`` maps an in-memory
    name the base does not hold to its on-disk name (``names.DiskNames``)."""
    deltas: dict[str, ModuleDelta] = {}
    replacements: dict[str, Any] = {}
    lora_biases: dict[str, Any] = {}  # module path → lora_B.bias

    def on_disk(name: str) -> str:
        if name in base or disk_name is None:
            return name
        return disk_name(name) or name

    for key, tensor in tensors.items():
        path, part = _split_key(key)
        if part == "skip":
            continue
        if part == "full":
            replacements[on_disk(path)] = tensor
            continue
        if part == "Bb":
            lora_biases[path] = tensor
            continue
        target = f"{path}.weight"
        if target not in base and f"model.{target}" in base:
            path, target = f"model.{path}", f"model.{target}"
        target = on_disk(target)  # rank/alpha patterns keep matching the in-memory module path, as in PEFT
        delta = deltas.setdefault(target, ModuleDelta(path, embedding=part in ("eA", "eB"), scaling=options.scaling(path)))
        setattr(delta, {"A": "A", "B": "B", "eA": "A", "eB": "B", "m": "magnitude"}[part], float32_array(tensor))
    for name, tensor in replacements.items():
        if name in base and tuple(base[name].shape) != tuple(tensor.shape) and not _is_vocab_resize(name, base[name], tensor):
            raise MergeError(f"{label}: adapter tensor for {name} has shape {list(tensor.shape)} but the base's is "
                             f"{list(base[name].shape)}; the adapter was trained on a different base model — pass the right --base-model")
    for target, d in deltas.items():
        _check_delta(options, target, d, base, replacements, label)
    bias_deltas = {}
    for path, bias in lora_biases.items():
        target, d = _bias_target(path, bias, deltas, base, replacements, label)
        bias_deltas[target] = bias.float() * d.scaling
    return AdapterPlan(options, deltas, replacements, bias_deltas=bias_deltas)


def _bias_target(path: str, bias: Any, deltas: dict[str, ModuleDelta], base: dict[str, TensorMeta],
                 replacements: dict[str, Any], label: str) -> tuple[str, ModuleDelta]:
    """The base bias tensor a ``lora_B.bias`` (``lora_bias=True``) is added to, and the
    module's update, whose scaling it shares."""
    weight = next((t for t, d in deltas.items() if d.module in (path, f"model.{path}")), None)
    if weight is None:
        raise MergeError(f"{label}: the adapter has a lora_B bias for {path} but no LoRA matrices for it; "
                         "the adapter file is incomplete")
    target = weight[: -len("weight")] + "bias"
    shape = tuple(replacements[target].shape) if target in replacements else tuple(base[target].shape) if target in base else None
    if shape is None:
        raise MergeError(f"{label}: the adapter trains a bias on lora_B of {deltas[weight].module} (lora_bias=True), but "
                         f"the base layer has no bias ({target} is not in the base model), so there is nowhere to merge "
                         "it (PEFT cannot merge it either); retrain with lora_bias=False, or use a base whose layer has a bias")
    if shape != tuple(bias.shape):
        raise MergeError(f"{label}: the lora_B bias of {deltas[weight].module} has shape {list(bias.shape)} but {target} "
                         f"is {list(shape)}; the adapter was trained on a different base model — pass the right --base-model")
    return target, deltas[weight]


def _is_vocab_resize(name: str, meta: TensorMeta, tensor: Any) -> bool:
    """A saved embedding or lm_head with more (or fewer) rows: a resized vocabulary."""
    return len(meta.shape) == 2 and tensor.dim() == 2 and meta.shape[1] == tensor.shape[1] and name.endswith(
        ("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_out.weight", "word_embeddings.weight"))


def _check_delta(options: LoraOptions, target: str, d: ModuleDelta, base: dict[str, TensorMeta],
                 replacements: dict[str, Any], label: str) -> None:
    if target not in base and target not in replacements:
        raise MergeError(f"{label}: the adapter targets {d.module}, but the base model has no tensor {target}; "
                         "the adapter was trained on a different base model — pass the right --base-model")
    if d.A is None or d.B is None:
        raise MergeError(f"{label}: the adapter for {d.module} has only one of its two LoRA matrices (A, B); the adapter file is incomplete")
    if options.use_dora != (d.magnitude is not None):
        raise MergeError(f"{label}: use_dora={options.use_dora} in adapter_config.json but {d.module} "
                         f"{'has no' if options.use_dora else 'has a'} lora_magnitude_vector; the adapter is inconsistent")
    shape = tuple(replacements[target].shape) if target in replacements else tuple(base[target].shape)
    r = options.rank(d.module)
    if d.A.shape[0] != r or d.B.shape[1] != r:
        raise MergeError(f"{label}: {d.module} has LoRA rank {d.A.shape[0]} but adapter_config.json says r={r}")
    if d.embedding:
        want = (d.A.shape[1], d.B.shape[0])
    else:
        want = (d.B.shape[0], d.A.shape[1])
        if options.fan_in_fan_out:
            want = want[::-1]
    if shape != want:
        raise MergeError(f"{label}: the adapter's update for {target} has shape {list(want)} (lora_A {list(d.A.shape)}, "
                         f"lora_B {list(d.B.shape)}) but the base tensor is {list(shape)}; the adapter was trained on a "
                         "different base model — pass the right --base-model")


def merged(plan: AdapterPlan, name: str, base_tensor: Any) -> Any:
    """The tensor to write for base tensor ``name``: replaced, merged (float32), or the
    base tensor itself when the adapter does not touch it."""
    tensor = plan.replacements.get(name, base_tensor)
    if name in plan.bias_deltas:  # PEFT: bias += lora_B.bias · scaling
        return tensor.float() + plan.bias_deltas[name]
    d = plan.deltas.get(name)
    if d is None:
        return tensor
    # One fused, in-place multiply-add in float32 (no ΔW-sized temporary): W += s·B@A,
    # or W += s·(B@A)ᵀ = s·Aᵀ@Bᵀ for embeddings and Conv1D (fan_in_fan_out) weights.
    import torch

    w = tensor.float() if tensor.dtype != torch_dtype("F32") else tensor.clone()
    per_column = d.embedding or plan.options.fan_in_fan_out
    a, b = torch.from_numpy(d.A), torch.from_numpy(d.B)
    if per_column:
        w.addmm_(a.T, b.T, alpha=d.scaling)
    else:
        w.addmm_(b, a, alpha=d.scaling)
    if d.magnitude is not None:
        norm = w.norm(p=2, dim=0 if per_column else 1)
        factor = torch.from_numpy(d.magnitude).reshape(-1) / norm
        w.mul_(factor.view(1, -1) if per_column else factor.view(-1, 1))
    return w


def row_blockable(plan: AdapterPlan, name: str) -> bool:
    """True when ``name``'s update can be applied a block of rows at a time (the fast,
    streaming path): row i of ΔW needs only row i of B (or of Aᵀ for embeddings and
    Conv1D), so every LoRA update qualifies; DoRA only when its norm is taken per row
    (Linear weights), not per column (embeddings, Conv1D), and never over a replaced
    (``modules_to_save``) tensor, which is already in memory."""
    d = plan.deltas.get(name)
    if d is None or name in plan.replacements:
        return False
    return d.magnitude is None or not (d.embedding or plan.options.fan_in_fan_out)


class RowMerger:
    """Applies one module's update to consecutive blocks of rows of its base tensor with
    the fused kernel (``lora_rows.c``): the maths of ``merged`` (W + s·left@right in
    float32, DoRA's per-row rescale, the finiteness check, one rounding to the dtype)
    in one pass over each block, without torch (no import on the export's critical
    path) and without a float32 copy of the block."""

    KINDS = {"F32": 0, "BF16": 1, "F16": 2}  # the dtypes the kernel merges in place

    def __init__(self, plan: AdapterPlan, name: str, dtype: str) -> None:
        import numpy as np

        d = plan.deltas[name]
        if d.embedding or plan.options.fan_in_fan_out:
            left, right = d.A.T, d.B.T  # ΔW = (B@A)ᵀ = Aᵀ@Bᵀ
        else:
            left, right = d.B, d.A
        self.left, self.right = np.ascontiguousarray(left), np.ascontiguousarray(right)
        self.scaling = d.scaling
        self.magnitude = d.magnitude.reshape(-1) if d.magnitude is not None else None
        self.name, self.dtype = name, dtype
        self.kind, self.limit = self.KINDS[dtype], FLOAT_LIMITS[dtype]

    def apply(self, source: Any, out: Any, row0: int, rows: int, spans: Any) -> None:
        """Writes the merged rows ``row0``…``row0+rows`` into ``out`` (a writable buffer)
        from the base's rows ``source`` (a buffer of the same size, may be read-only)."""
        from time import perf_counter, thread_time

        from tune2serve.components.export.merge._lora_rows import merge_rows

        t0, c0 = perf_counter(), thread_time()
        args = (source, out, self.kind, self.left[row0:row0 + rows], self.right, rows, self.right.shape[1],
                self.right.shape[0], self.scaling, self.limit,
                self.magnitude[row0:row0 + rows] if self.magnitude is not None else None)
        failed = merge_rows(*args)
        spans.add("merge (fused: convert, GEMM, check, cast)", perf_counter() - t0, thread_time() - c0)
        if failed:  # NaN/Inf, or beyond the output dtype's range: the exact counts, for the message
            _, nans, infs, beyond, largest = merge_rows(*args, detail=True)
            raise refusal(self.name, (row0, row0 + rows), nans, infs, beyond, largest, "float32",
                          dtype_name(self.dtype), self.limit)


def cast(tensor: Any, out_dtype: str) -> Any:
    """Casts floating tensors to the output dtype; integer buffers keep theirs."""
    if tensor.is_floating_point():
        return tensor.to(torch_dtype(out_dtype)).contiguous()
    return tensor.contiguous()
