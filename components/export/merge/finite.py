"""Finite weights: every merged (or converted) tensor is checked as it streams, before
its cast to the output dtype, so a NaN/Inf adapter, or a value that the output dtype
cannot hold, fails the export with the tensor's name instead of shipping a model that
answers garbage.

Why before the cast, against the output dtype's range: a float32 value beyond
bfloat16's largest finite value (3.3895e38) or float16's (65504) is finite in float32
and becomes ±Inf in the cast when it lies past the halfway point to the next power,
and is silently clipped to the largest finite value below it. Both are a merge gone
wrong (real weights are orders of magnitude smaller), so both are refused: the check
is ``|value| <= finfo(output dtype).max`` on the float32 merge result, NaN failing it.

The check runs on each block while it is still in cache: one ``aminmax`` pass (NaN
propagates into it); only when a bound fails, the exact count for the message. The
fused row merge (``lora_rows.c``, almost every merged byte) checks each value in the
same pass that computes it, against the same bound, and words its refusal here too.
"""

from __future__ import annotations

import math
from typing import Any

from tune2serve.components.errors import MergeError


# The largest finite value of each float output dtype, as float32 holds it: the bound of
# the check (finfo(dtype).max, capped at float32's, the dtype the merge computes in).
FLOAT_LIMITS = {"F32": 3.4028234663852886e38, "BF16": 3.3895313892515355e38, "F16": 65504.0}


def check_finite(block: Any, name: str, rows: tuple[int, int] | None = None, out_dtype: Any = None) -> None:
    """Raises ``MergeError`` naming tensor ``name`` when ``block`` (a torch tensor, before
    its cast) holds a NaN or an infinity, or a value beyond the range of ``out_dtype``
    (the dtype it is about to be cast to; None: its own)."""
    import torch

    if not block.is_floating_point() or block.numel() == 0:
        return
    target = out_dtype if out_dtype is not None and out_dtype.is_floating_point else block.dtype
    limit = min(torch.finfo(target).max, torch.finfo(block.dtype).max)
    low, high = (float(v) for v in torch.aminmax(block))
    if math.isfinite(low) and math.isfinite(high) and -limit <= low and high <= limit:
        return
    nans = int(torch.isnan(block).sum())
    infs = int(torch.isinf(block).sum())
    beyond = 0 if nans or infs else int((block.abs() > limit).sum())
    raise refusal(name, rows, nans, infs, beyond, max(abs(low), abs(high)), _dtype(block.dtype), _dtype(target), limit)


def refusal(name: str, rows: tuple[int, int] | None, nans: int, infs: int, beyond: int, largest: float,
            computed_in: str, target: str, limit: float) -> MergeError:
    """The error for a tensor that failed the check, with the counts that say how: the
    torch check above and the fused row merge (``merge.RowMerger``) word it the same."""
    where = f" (rows {rows[0]}..{rows[1]})" if rows else ""
    if nans or infs:
        return MergeError(
            f"tensor {name}{where}: the merge produced {nans + infs} non-finite values ({nans} NaN, {infs} ±Inf) "
            f"in {computed_in}; the adapter's weights or scaling are NaN/Inf or overflow float32. Nothing "
            "was published; check the adapter",
            file=None,
        )
    return MergeError(
        f"tensor {name}{where}: {beyond} values are finite in {computed_in} but beyond {target}'s "
        f"range (largest magnitude {largest:.5g}, {target} holds at most {limit:.5g}): the cast to "
        f"{target} would turn them into ±Inf or clip them, and the model would answer garbage. Nothing was "
        "published; check the adapter's weights and scaling (or export with --dtype float32)",
        file=None,
    )


def _dtype(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")
