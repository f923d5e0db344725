"""Finite weights: every merged tensor is checked as it streams, so a NaN/Inf adapter,
or an update that overflows the output dtype (bf16/fp16 turn overflow into Inf), fails
the export with the tensor's name instead of shipping a model that answers garbage.

The check runs on each output block while it is still in cache: one float32 sum of the
block (NaN and Inf propagate into it), and only when that sum is not finite, the exact
element test (a sum of huge-but-finite bf16 values can overflow on its own).
"""

from __future__ import annotations

import math
from typing import Any

from tune2serve.components.errors import MergeError


def check_finite(block: Any, name: str, rows: tuple[int, int] | None = None) -> None:
    """Raises ``MergeError`` naming tensor ``name`` when ``block`` (a torch tensor in
    the output dtype) holds a NaN or an infinity."""
    import torch

    if not block.is_floating_point() or block.numel() == 0:
        return
    if math.isfinite(float(torch.sum(block, dtype=torch.float32))):
        return
    bad = ~torch.isfinite(block)
    if not bool(bad.any()):
        return
    count = int(bad.sum())
    nans = int(torch.isnan(block).sum())
    where = f" (rows {rows[0]}..{rows[1]})" if rows else ""
    raise MergeError(
        f"tensor {name}{where}: the merge produced {count} non-finite values ({nans} NaN, {count - nans} ±Inf) "
        f"in {str(block.dtype).removeprefix('torch.')}; the adapter's weights or scaling are NaN/Inf or overflow "
        "the output dtype. Nothing was published; check the adapter (or export with --dtype float32)",
        file=None,
    )
