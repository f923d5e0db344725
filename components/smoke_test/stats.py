"""Latency statistics for the smoke test's metrics (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100), as numpy's default; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(latencies_s: Sequence[float], ttfts_s: Sequence[float], tokens: int, token_time_s: float,
              errors: int, passed: int, failed: int) -> dict[str, float]:
    """The KFP Metrics the smoke test logs. NaN-valued figures (no sample) are left out,
    because KFP Metrics refuses non-finite numbers."""
    figures = {
        "latency_p50_s": percentile(latencies_s, 50),
        "latency_p95_s": percentile(latencies_s, 95),
        "time_to_first_token_p50_s": percentile(ttfts_s, 50),
        "tokens_per_s": tokens / token_time_s if token_time_s > 0 and tokens else math.nan,
        "requests": float(len(latencies_s)),
        "errors": float(errors),
        "checks_passed": float(passed),
        "checks_failed": float(failed),
    }
    return {k: round(v, 4) for k, v in figures.items() if math.isfinite(v)}
