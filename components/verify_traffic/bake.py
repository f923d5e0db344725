"""The bake: after the probe passes at a canary step, hold the split and judge the
canary by the endpoint's *real* traffic, as Cloud Monitoring counts it — the way
SageMaker's deployment guardrails bake each step under CloudWatch alarms and Argo
Rollouts runs an analysis over Prometheus. The probe only catches a canary broken for
everyone; the bake catches one that fails the traffic the probe does not resemble.

Verdict over the window (``judge_bake``, pure, so the rule is tested without a server):

* **inconclusive** — the canary answered fewer than ``min_requests`` requests, or the
  serving models answered none: too little to judge, which is not success. Rolled back,
  unless ``on_inconclusive="hold"`` (then the split is left as it is, the outcome is
  "failed", and an operator decides: ``verify-traffic ENDPOINT --rollback``, or a new run).
* **failed** — the canary's error rate (non-2xx answers / answers) exceeds the serving
  models' by more than ``max_error_rate_delta`` (absolute, default 0.01: one point), or
  its p95 latency exceeds ``max_latency_ratio`` (default 1.5) × theirs (compared when
  both have ``min_requests`` successful answers; p95 from the merged latency
  distributions, at the upper bound of the bucket that holds it).
* **passed** — otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components import ranges
from tune2serve.components.vertex.monitoring import LatencyPoint, ModelSeries

PASSED, FAILED, INCONCLUSIVE = "passed", "failed", "inconclusive"
DEFAULT_MAX_ERROR_RATE_DELTA = 0.01
DEFAULT_MAX_LATENCY_RATIO = 1.5
DEFAULT_MIN_REQUESTS = 20


@dataclass(frozen=True)
class BakePolicy:
    bake_s: float = 0.0
    max_error_rate_delta: float = DEFAULT_MAX_ERROR_RATE_DELTA
    max_latency_ratio: float = DEFAULT_MAX_LATENCY_RATIO
    min_requests: int = DEFAULT_MIN_REQUESTS
    on_inconclusive: str = "rollback"  # or "hold"

    def problem(self) -> str:
        """Why this policy is unusable ("" when it is fine): each number in its documented
        range (``components.ranges``: NaN and Inf never pass)."""
        for spec, value in ((ranges.BAKE_S, self.bake_s), (ranges.MAX_ERROR_RATE_DELTA, self.max_error_rate_delta),
                            (ranges.MAX_LATENCY_RATIO, self.max_latency_ratio),
                            (ranges.MIN_BAKE_REQUESTS, self.min_requests)):
            problem = spec.problem(value)
            if problem:
                return f"{spec.flag}: {problem}"
        if self.on_inconclusive not in ("rollback", "hold"):
            return f"on_inconclusive must be rollback or hold; got {self.on_inconclusive!r}"
        return ""


@dataclass(frozen=True)
class WindowStats:
    requests: int
    errors: int
    p95_ms: float | None
    latency_samples: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 4),
                "p95_ms": None if self.p95_ms is None else round(self.p95_ms, 1),
                "latency_samples": self.latency_samples}


def is_success(code: str) -> bool:
    """Vertex labels response_code with the HTTP status ("200"; the docs also say "2xx")."""
    return code.startswith("2")


def percentile(points: Iterable[LatencyPoint], q: float) -> float | None:
    """The q-th percentile of merged distributions: the upper bound of the bucket that
    holds it (the overflow bucket's lower bound when it falls there)."""
    merged: dict[float, int] = {}
    for p in points:
        for bound, count in zip(p.bounds, p.counts):
            merged[bound] = merged.get(bound, 0) + count
    total = sum(merged.values())
    if not total:
        return None
    rank, seen, bounds = q / 100 * total, 0, sorted(merged)
    for i, bound in enumerate(bounds):
        seen += merged[bound]
        if seen >= rank and merged[bound]:
            return bound if bound != float("inf") else (bounds[i - 1] if i else 0.0)
    return bounds[-1]


def window_stats(series: Iterable[ModelSeries]) -> WindowStats:
    series = list(series)
    counts = [c for s in series for c in s.counts]
    latencies = [p for s in series for p in s.latencies]
    return WindowStats(sum(c.count for c in counts), sum(c.count for c in counts if not is_success(c.code)),
                       percentile(latencies, 95), sum(p.count for p in latencies))


@dataclass(frozen=True)
class BakeResult:
    verdict: str
    window: tuple[float, float]
    canary: WindowStats
    baseline: WindowStats
    failures: tuple[str, ...] = ()
    series: dict[str, dict[str, Any]] = field(default_factory=dict)  # the points read, per deployed model

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "window": {"start": round(self.window[0], 3), "end": round(self.window[1], 3),
                                                    "seconds": round(self.window[1] - self.window[0], 1)},
                "canary": self.canary.as_dict(), "baseline": self.baseline.as_dict(),
                "failures": list(self.failures), "series": self.series}


def _series_evidence(read: Mapping[str, ModelSeries]) -> dict[str, dict[str, Any]]:
    """The points read, compact enough for the JSON output and the chart."""
    out = {}
    for dm, s in sorted(read.items()):
        out[dm] = {"response_count": [{"start": c.start, "end": c.end, "response_code": c.code, "count": c.count}
                                      for c in s.counts],
                   "prediction_latencies": [{"start": p.start, "end": p.end, "count": p.count,
                                             "mean_ms": round(p.mean_ms, 2),
                                             "p95_ms": percentile([p], 95)} for p in s.latencies]}
    return out


def judge_bake(read: Mapping[str, ModelSeries], canary_id: str, serving_ids: Iterable[str], policy: BakePolicy,
               window: tuple[float, float] = (0.0, 0.0)) -> BakeResult:
    """The verdict on the window; see the module docstring for the rule."""
    serving = [i for i in serving_ids if i != canary_id]
    canary = window_stats([read[canary_id]] if canary_id in read else [])
    baseline = window_stats(read[i] for i in serving if i in read)
    evidence = _series_evidence(read)
    seconds = window[1] - window[0]
    if canary.requests < policy.min_requests or baseline.requests == 0:
        reason = (f"bake inconclusive: over {seconds:.0f} s the canary answered {canary.requests} requests "
                  f"(at least {policy.min_requests} needed) and the serving models {baseline.requests}; "
                  "too little real traffic to judge")
        return BakeResult(INCONCLUSIVE, window, canary, baseline, (reason,), evidence)
    failures = []
    if canary.error_rate > baseline.error_rate + policy.max_error_rate_delta:
        failures.append(f"bake: over {seconds:.0f} s of real traffic the canary's error rate {canary.error_rate:.1%} "
                        f"({canary.errors}/{canary.requests}) exceeds the serving models' {baseline.error_rate:.1%} "
                        f"({baseline.errors}/{baseline.requests}) by more than {policy.max_error_rate_delta:.1%}")
    if (canary.p95_ms is not None and baseline.p95_ms is not None
            and min(canary.latency_samples, baseline.latency_samples) >= policy.min_requests
            and canary.p95_ms > policy.max_latency_ratio * baseline.p95_ms):
        failures.append(f"bake: the canary's p95 latency {canary.p95_ms:.0f} ms exceeds "
                        f"{policy.max_latency_ratio:g} x the serving models' {baseline.p95_ms:.0f} ms")
    return BakeResult(FAILED if failures else PASSED, window, canary, baseline, tuple(failures), evidence)


Reader = Callable[[float, float], Mapping[str, ModelSeries]]


def bake(read: Reader, canary_id: str, serving_ids: Iterable[str], policy: BakePolicy, *,
         renew: Callable[[], None] = lambda: None, renew_every_s: float = 60.0,
         clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> BakeResult:
    """Holds the split ``policy.bake_s`` seconds (renewing the endpoint's lease now and
    then), then reads the window through ``read(start, end)`` and judges it."""
    start = clock()
    end = start + policy.bake_s
    while (left := end - clock()) > 0:
        sleep(min(left, renew_every_s))
        if end - clock() > 0:
            renew()
    window = (start, clock())
    return judge_bake(read(*window), canary_id, serving_ids, policy, window)
