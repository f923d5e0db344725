"""Parameter-level LoRA on fused MoE experts, merged as PEFT merges it, one expert at a time.

With transformers 5 the experts of Mixtral, Qwen3-MoE, DeepSeek-V3, Qwen3-Next… are
3-D parameters in memory (``mlp.experts.gate_up_proj`` [E, 2I, H]) and per-expert 2-D
tensors on disk (``block_sparse_moe.experts.N.w1``/``w3``); gpt-oss and Llama-4 keep
the fused [E, …] tensor on disk too. PEFT 0.21 turns ``target_modules="all-linear"``
there into ``target_parameters``: one ``ParamWrapper`` per parameter, nested on the
``experts`` module (``experts.lora_A``, ``experts.base_layer.lora_A``…), each with
lora_A [r·E, in] and lora_B [out, r·E]. PEFT does not guess the orientation: a 3-D
parameter is [E, out, in] unless the experts module says ``is_transposed`` ([E, in, out],
gpt-oss), which it reads from the module; so does this module, from the base
architecture built on the meta device (``names.DiskNames``), so a square expert matrix
(gpt-oss's down_proj, 2880 × 2880) merges like any other.

The update is PEFT's ``ParamWrapper.get_delta_weight``, ΔW[e] = scaling · B_e @ A_e,
which needs only expert e's slices of A and B. Nothing is merged at plan time: the plan
maps each on-disk tensor to (parameter, experts, name in transformers' own
``revert_weight_conversion`` of those experts — the split ``save_pretrained`` applies),
and the stream asks for the deltas when the writer reaches the tensor, one expert at a
time, dropping each once written. Memory is one expert's delta per parameter of one
module (Mixtral-8x7B: ~0.7 GB in float32), whatever the number of layers.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tune2serve.components.checkpoint.tensor_reader import FLOAT_NAMES
from tune2serve.components.errors import MergeError
from tune2serve.components.export.plan.adapter_config import pattern_value

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+\.experts)(?P<nest>(?:\.base_layer)*)\.lora_(?P<ab>[AB])\.weight$")
_PEFT = "merge with PEFT and export the merged folder"


def is_param_lora(key: str) -> bool:
    """True for an adapter key of LoRA on an ``…experts`` module's parameters."""
    return _KEY.match(key) is not None


def split_param_lora(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the other adapter tensors, {"module|nest": {"A": …, "B": …}}) for LoRA on the
    parameters of ``…experts`` modules."""
    rest: dict[str, Any] = {}
    wrapped: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        m = _KEY.match(key)
        if m is None:
            rest[key] = tensor
        else:
            wrapped.setdefault(f"{m['module']}|{m['nest']}", {})[m["ab"]] = tensor
    return rest, wrapped


@dataclass(frozen=True)
class _Update:
    """The LoRA of one 3-D parameter, in PEFT's ``get_delta_weight`` terms."""

    a: Any  # float32 [r·E, in]
    b: Any  # float32 [out, r·E]
    experts: int
    formula: str  # "… -> e o i" ([E, out, in]) or "… -> e i o" (is_transposed: [E, in, out])
    scaling: float

    def delta(self, first: int, stop: int) -> Any:
        """ΔW of experts first..stop-1, as PEFT's einsum computes it for them."""
        import torch

        r = self.a.shape[0] // self.experts
        b = self.b.reshape(self.b.shape[0], r, self.experts)[:, :, first:stop]
        a = self.a.reshape(self.experts, r, self.a.shape[1])[first:stop]
        return torch.einsum(self.formula, b, a) * self.scaling


@dataclass(frozen=True)
class _Piece:
    """An on-disk tensor: the slabs (along its dim 0) that ``revert_weight_conversion``
    of each expert group of ``param`` gives under the name ``local``."""

    param: str
    groups: tuple[tuple[int, int], ...]
    local: str


class ExpertDeltas:
    """``slabs(disk_name)``: the float32 update of one on-disk expert tensor, slab by slab
    along its dim 0, computed when asked. Each group's reverted tensors are kept until
    the writer has taken them all (gate and up halves come from one delta), at most one
    group per parameter of a module."""

    def __init__(self, updates: dict[str, _Update], pieces: dict[str, _Piece], disk_names: Any, keep: int) -> None:
        self.updates = updates
        self.pieces = pieces
        self._disk_names = disk_names
        self._keep = max(1, keep)
        self._cache: OrderedDict[tuple[str, tuple[int, int]], dict[str, Any]] = OrderedDict()

    @property
    def held(self) -> int:
        """Expert groups whose reverted updates are in memory now (tests, benchmark)."""
        return len(self._cache)

    def __contains__(self, name: str) -> bool:
        return name in self.pieces

    def slabs(self, name: str) -> Iterator[Any]:
        piece = self.pieces[name]
        for group in piece.groups:
            yield self._take(piece.param, group, piece.local)

    def _take(self, param: str, group: tuple[int, int], local: str) -> Any:
        key = (param, group)
        reverted = self._cache.get(key)
        if reverted is None or local not in reverted:
            delta = self.updates[param].delta(*group)
            reverted = dict(self._disk_names.revert({param: delta}))
            del delta
            self._cache[key] = reverted
            while len(self._cache) > self._keep:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        out = reverted.pop(local)
        if not reverted:
            del self._cache[key]
        return out


def plan_param_lora(wrapped: dict[str, dict[str, Any]], options: Any, disk_names: Any,
                    base: dict[str, Any], label: str) -> ExpertDeltas | None:
    """Maps every parameter-level LoRA onto the base's on-disk expert tensors and checks
    that they fit, so a wrong base fails before anything is written."""
    if not wrapped:
        return None
    params = disk_names.parameters()
    if params is None:
        raise MergeError(f"{label}: parameter-level LoRA on MoE experts needs the base architecture, which "
                         f"transformers cannot build here; {_PEFT}")
    by_module: dict[str, list[dict[str, Any]]] = {}
    for key, ab in wrapped.items():
        module = key.split("|")[0]
        if set(ab) != {"A", "B"}:
            raise MergeError(f"{label}: the adapter for {module} has only one of its two LoRA matrices")
        by_module.setdefault(module, []).append(ab)
    updates: dict[str, _Update] = {}
    pieces: dict[str, tuple[_Piece, tuple[int, ...]]] = {}
    for module, pairs in sorted(by_module.items()):
        transposed = bool(getattr(disk_names.module(module), "is_transposed", False))  # PEFT's own read
        candidates = {n: s for n, s in params.items() if n.rsplit(".", 1)[0] == module and len(s) == 3}
        for ab in pairs:
            name, update = _fit(module, ab["A"].float(), ab["B"].float(), candidates, transposed, updates, options, label)
            updates[name] = update
            pieces.update(_pieces(name, candidates[name], disk_names, label))
    deltas = ExpertDeltas(updates, {disk: piece for disk, (piece, _) in pieces.items()}, disk_names,
                          keep=max(len(p) for p in by_module.values()))
    for disk, (piece, want) in pieces.items():
        meta = base.get(disk)
        if meta is None or tuple(meta.shape) != want or meta.dtype not in FLOAT_NAMES:
            found = "no such tensor" if meta is None else f"{list(meta.shape)} {meta.dtype}"
            raise MergeError(f"{label}: the adapter's LoRA on {piece.param} updates {disk} {list(want)}, but the base "
                             f"model has {found}; the adapter was trained on a different base model — pass the right "
                             "--base-model")
    return deltas


def _fit(module: str, a: Any, b: Any, candidates: dict[str, tuple[int, ...]], transposed: bool,
         done: dict[str, _Update], options: Any, label: str) -> tuple[str, _Update]:
    """The one parameter of ``module`` whose LoRA shapes, in PEFT's orientation, are A's
    and B's (PEFT: in/out = dims 1/2 of [E, ·, ·], swapped unless ``is_transposed``)."""
    fits = []
    for name, (e, d1, d2) in candidates.items():
        in_f, out_f = (d1, d2) if transposed else (d2, d1)
        if name in done or a.shape[0] % e or a.shape[0] != b.shape[1] or (a.shape[1], b.shape[0]) != (in_f, out_f):
            continue
        fits.append(name)
    if len(fits) != 1:
        raise MergeError(f"{label}: cannot tell which parameter of {module} the LoRA matrices {list(a.shape)} / "
                         f"{list(b.shape)} update (candidates {sorted(candidates)}"
                         f"{', the base model does not fit them' if not fits else ''}); {_PEFT}")
    name = fits[0]
    e = candidates[name][0]
    r = a.shape[0] // e
    alpha = float(pattern_value(options.alpha_pattern, name, options.lora_alpha))
    scaling = alpha / math.sqrt(r) if options.use_rslora else alpha / r
    formula = "o r e, e r i -> e i o" if transposed else "o r e, e r i -> e o i"
    return name, _Update(a, b, e, formula, scaling)


def _pieces(name: str, shape: tuple[int, ...], disk_names: Any, label: str) -> dict[str, tuple[_Piece, tuple[int, ...]]]:
    """Where each on-disk tensor of parameter ``name`` comes from, found by reverting
    meta tensors (no memory). A fused tensor on disk under another name at most (gpt-oss,
    Llama-4: transformers returns the very tensor): one slab per expert. Per-expert
    tensors on disk (Mixtral's ``experts.N.w1``): one expert's revert names them with
    index 0, the whole one with N. Any other conversion (a transpose or an interleave
    of the fused tensor…): the whole parameter at once, one module's memory, never more.
    Each with the on-disk shape the base must have."""
    import torch

    experts = shape[0]
    probe = torch.empty(shape, device="meta")
    try:
        reverted = disk_names.revert({name: probe})
    except Exception as e:  # a converter that needs real values: the on-disk layout is unknown here
        raise MergeError(f"{label}: transformers cannot map {name} {list(shape)} to its on-disk tensors without "
                         f"loading it ({type(e).__name__}: {e}); {_PEFT}") from e
    full = {k: tuple(v.shape) for k, v in reverted.items()}
    if len(reverted) == 1 and next(iter(reverted.values())) is probe:
        disk = next(iter(reverted))
        return {disk: (_Piece(name, tuple((e, e + 1) for e in range(experts)), disk), shape)}
    try:
        one = {k: tuple(v.shape) for k, v in disk_names.revert({name: torch.empty((1, *shape[1:]), device="meta")}).items()}
    except Exception:  # a conversion that needs all the experts
        one = {}
    per_expert = _per_expert_names(one, full, experts)
    if per_expert is not None:
        return {disk: (_Piece(name, ((e, e + 1),), local), full[disk]) for disk, (e, local) in per_expert.items()}
    return {k: (_Piece(name, ((0, experts),), k), full[k]) for k in full}


def _per_expert_names(one: dict[str, tuple[int, ...]], full: dict[str, tuple[int, ...]],
                      experts: int) -> dict[str, tuple[int, str]] | None:
    """{full name: (expert, name in one expert's revert)} when the full revert is one
    expert's, renumbered at one ``.0.`` of each name (the expert index), else None."""
    out: dict[str, tuple[int, str]] = {}
    for local, local_shape in one.items():
        spots = [m.start() for m in re.finditer(r"(?<=\.)0(?=\.)", local)]
        for spot in spots:
            names = [f"{local[:spot]}{e}{local[spot + 1:]}" for e in range(experts)]
            if all(full.get(n) == local_shape for n in names):
                out.update({n: (e, local) for e, n in enumerate(names)})
                break
        else:
            return None
    return out if set(out) == set(full) else None
