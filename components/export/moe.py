"""Parameter-level LoRA on fused MoE experts, merged as PEFT merges it.

With transformers 5 the experts of Mixtral, Qwen3-MoE, DeepSeek-V3, Qwen3-Next… are
3-D parameters in memory (``mlp.experts.gate_up_proj`` [E, 2I, H]) and per-expert 2-D
tensors on disk (``block_sparse_moe.experts.N.w1``/``w3``). PEFT 0.21 turns
``target_modules="all-linear"`` there into ``target_parameters``: one ``ParamWrapper``
per parameter, nested on the ``experts`` module (``experts.lora_A``,
``experts.base_layer.lora_A``…), each with lora_A [r·E, in] and lora_B [out, r·E].
The update of each is PEFT's ``ParamWrapper.get_delta_weight``:
ΔW[e] = scaling · B_e @ A_e in the parameter's layout, which this module computes in
float32, then maps to the on-disk tensors with transformers' own
``revert_weight_conversion`` (the split into experts and gate/up halves that
``save_pretrained`` applies) and adds to the base tensors. The merged expert tensors
are held in memory, so the total is bounded (``MAX_MERGED_BYTES``); beyond it, or when
the layout is ambiguous (a square expert matrix), the adapter is refused by name.
"""

from __future__ import annotations

import math
import re
from typing import Any

from tune2serve.components.errors import MergeError

MAX_MERGED_BYTES = 8 * 1024**3
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+\.experts)(?P<nest>(?:\.base_layer)*)\.lora_(?P<ab>[AB])\.weight$")


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


def merge_param_lora(wrapped: dict[str, dict[str, Any]], options: Any, disk_names: Any, read_base: Any,
                     label: str) -> dict[str, Any]:
    """{on-disk name: merged float32 tensor} for every expert tensor the adapter updates."""
    if not wrapped:
        return {}
    import torch

    params = disk_names.parameters()
    if params is None:
        raise MergeError(f"{label}: parameter-level LoRA on MoE experts needs the base architecture, which "
                         "transformers cannot build here; merge with PEFT and export the merged folder")
    by_module: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for key, ab in wrapped.items():
        module, _nest = key.split("|")
        if set(ab) != {"A", "B"}:
            raise MergeError(f"{label}: the adapter for {module} has only one of its two LoRA matrices")
        by_module.setdefault(module, []).append((key, ab))
    out: dict[str, Any] = {}
    total = 0
    for module, pairs in sorted(by_module.items()):
        candidates = {n: s for n, s in params.items() if n.rsplit(".", 1)[0] == module and len(s) == 3}
        used: set[str] = set()
        for key, ab in pairs:
            name, delta = _delta(module, ab["A"].float(), ab["B"].float(), candidates, used, options, label)
            used.add(name)
            for disk, piece in disk_names.revert({name: delta}).items():
                merged = read_base(disk).float() + piece
                total += merged.numel() * 4
                if total > MAX_MERGED_BYTES:
                    raise MergeError(f"{label}: parameter-level LoRA on MoE experts would hold more than "
                                     f"{MAX_MERGED_BYTES // 1024**3} GiB of merged expert tensors in memory; merge "
                                     "with PEFT on a large machine and export the merged folder")
                out[disk] = merged
    return out


def _delta(module: str, a: Any, b: Any, candidates: dict[str, tuple[int, ...]], used: set[str], options: Any,
           label: str) -> tuple[str, Any]:
    import torch

    fits = []
    for name, (e, d1, d2) in candidates.items():
        if name in used or a.shape[0] % e or a.shape[0] != b.shape[1]:
            continue
        r = a.shape[0] // e
        out_f, in_f = b.shape[0], a.shape[1]
        if (d1, d2) == (out_f, in_f) and (d1, d2) == (in_f, out_f) and out_f == in_f:
            raise MergeError(f"{label}: {name} is square ({e} × {d1} × {d2}), so the layout of its LoRA update is "
                             "ambiguous; merge with PEFT and export the merged folder")
        if (d1, d2) == (out_f, in_f):
            fits.append((name, r, "o r e, e r i -> e o i"))
        elif (d1, d2) == (in_f, out_f):
            fits.append((name, r, "o r e, e r i -> e i o"))
    if len(fits) != 1:
        raise MergeError(f"{label}: cannot tell which parameter of {module} the LoRA matrices {list(a.shape)} / "
                         f"{list(b.shape)} update (candidates {sorted(candidates)}); merge with PEFT and export the "
                         "merged folder")
    name, r, formula = fits[0]
    e = candidates[name][0]
    alpha = float(_alpha(options, name))
    scaling = alpha / math.sqrt(r) if options.use_rslora else alpha / r
    delta = torch.einsum(formula, b.reshape(b.shape[0], r, e), a.reshape(e, r, a.shape[1])) * scaling
    return name, delta


def _alpha(options: Any, name: str) -> float:
    from tune2serve.components.export.merge import _pattern_value

    return float(_pattern_value(options.alpha_pattern, name, options.lora_alpha))
