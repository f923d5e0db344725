"""Traffic splits worked out from one percentage (pure functions, tested with ``==``).

A promotion only ever says "give the new deployed model N %". The other deployed
models keep their relative weights and share the rest, rounded to whole percents by the
largest-remainder method so the split always sums to exactly 100 (Vertex rejects any
other sum). ``NEW_MODEL_KEY`` ("0") is how a deployModel request names the model it is
deploying, before it has an id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from tune2serve.components import ranges
from tune2serve.components.errors import UsageError

NEW_MODEL_KEY = "0"
Split = dict[str, int]


def normalize(split: Mapping[str, int]) -> Split:
    """The split without zero entries, keys sorted (Vertex treats absent and 0 the same)."""
    return {k: int(v) for k, v in sorted(split.items()) if int(v) != 0}


def canary_split(current: Mapping[str, int], new_id: str, percent: int) -> Split:
    """The split that gives ``new_id`` ``percent`` % and the others the rest in proportion.

    ``current`` may already contain ``new_id`` (a later canary step): its share there is
    ignored. With nothing else serving, the new model gets 100 %.
    """
    if not 0 <= percent <= 100:
        raise UsageError(f"a canary percentage must be between 0 and 100; got {percent}")
    others = {k: int(v) for k, v in current.items() if k != new_id and int(v) > 0}
    total = sum(others.values())
    if total == 0:
        return {new_id: 100}
    rest = 100 - percent
    exact = {k: rest * v / total for k, v in others.items()}
    shares = {k: math.floor(x) for k, x in exact.items()}
    leftover = rest - sum(shares.values())
    for k in sorted(exact, key=lambda k: (shares[k] - exact[k], k))[:leftover]:
        shares[k] += 1
    return normalize({new_id: percent, **shares})


def full_split(new_id: str) -> Split:
    return {new_id: 100}


def parse_steps(steps: str | None, canary_percent: int | None = None) -> list[int]:
    """The canary schedule: ``--steps 10,50,100``, or else ``--canary-percent N`` (then N,
    100; default 10). Always ends at 100; strictly increasing; each step in 1..100 (the
    ranges of ``components.ranges``: no empty item, no 0, no NaN)."""
    if steps:
        values = ranges.STEPS.values(steps)
    else:
        percent = ranges.DEFAULT_CANARY_PERCENT if canary_percent is None else canary_percent
        values = [int(ranges.CANARY_PERCENT.check(percent))]
    return values if values[-1] == 100 else [*values, 100]


def rescale(split: Mapping[str, int]) -> Split:
    """``split``'s positive shares scaled to sum to 100 (when a recorded model is gone)."""
    return canary_split(split, "", 0) if any(int(v) > 0 for v in split.values()) else {}
