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

Garbage from Cloud Monitoring is never a pass: a negative count, a negative bucket
count, a NaN/Inf mean, a bucket bound that is not a number, not increasing or +inf
before the last bucket, bucket counts that do not sum to the distribution's count, an
interval that ends before it starts — any of these in the canary's or the serving
models' series makes the bake **inconclusive** (rolled back, or held under "hold"),
and the reason names each bad point (which deployed model, which metric, when, what was
wrong). ``nan < x`` is false for every x, so such data would otherwise slip past every
threshold; the numbers judged and reported are computed from the valid points only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components import ranges
from tune2serve.components.vertex.monitoring import CountPoint, LatencyPoint, ModelSeries

PASSED, FAILED, INCONCLUSIVE = "passed", "failed", "inconclusive"
DEFAULT_MAX_ERROR_RATE_DELTA = 0.01
DEFAULT_MAX_LATENCY_RATIO = 1.5
DEFAULT_MIN_REQUESTS = 20
MAX_PROBLEMS_SHOWN = 5  # in the reason; every one is in the evidence's data_problems


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


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _interval_problem(start: Any, end: Any) -> str:
    if not all(isinstance(t, (int, float)) and math.isfinite(t) for t in (start, end)) or end < start:
        return f"its interval [{start!r}, {end!r}] is not a time interval"
    return ""


def count_problem(point: CountPoint) -> str:
    """Why a response_count point cannot be judged ("" when it can)."""
    if not _is_count(point.count):
        return f"its count {point.count!r} is not a count (negative or not a whole number)"
    return _interval_problem(point.start, point.end)


def latency_problem(point: LatencyPoint) -> str:
    """Why a prediction_latencies distribution point cannot be judged ("" when it can)."""
    if not _is_count(point.count):
        return f"its count {point.count!r} is not a count (negative or not a whole number)"
    if not isinstance(point.mean_ms, (int, float)) or not math.isfinite(point.mean_ms) or point.mean_ms < 0:
        return f"its mean {point.mean_ms!r} ms is not a finite, non-negative latency"
    if len(point.bounds) != len(point.counts):
        return f"it has {len(point.bounds)} bucket bounds for {len(point.counts)} bucket counts"
    bad = next((c for c in point.counts if not _is_count(c)), None)
    if bad is not None:
        return f"a bucket count {bad!r} is not a count (negative or not a whole number)"
    for i, bound in enumerate(point.bounds):
        if not isinstance(bound, (int, float)) or math.isnan(bound) or bound == -math.inf:
            return f"bucket bound {i} ({bound!r}) is not a number"
        if bound == math.inf and i != len(point.bounds) - 1:
            return f"bucket bound {i} is +inf before the last bucket"
        if i and not bound > point.bounds[i - 1]:
            return f"its bucket bounds are not increasing ({point.bounds[i - 1]!r} then {bound!r})"
    if point.counts and sum(point.counts) != point.count:
        return f"its bucket counts sum to {sum(point.counts)}, not to its count {point.count}"
    return _interval_problem(point.start, point.end)


def data_problems(read: Mapping[str, ModelSeries], deployed_ids: Iterable[str]) -> list[str]:
    """Every point of these deployed models' series that cannot be judged, named: which
    deployed model, which metric, when, and what is wrong with it."""
    problems = []
    for dm in deployed_ids:
        series = read.get(dm)
        if series is None:
            continue
        for c in series.counts:
            if why := count_problem(c):
                problems.append(f"deployed model {dm}: response_count (response_code {c.code!r}) point at "
                                f"{c.start!r}: {why}")
        for p in series.latencies:
            if why := latency_problem(p):
                problems.append(f"deployed model {dm}: prediction_latencies point at {p.start!r}: {why}")
    return problems


def valid_points(series: ModelSeries) -> ModelSeries:
    """The series without the points ``data_problems`` names (what the numbers are made of)."""
    return ModelSeries([c for c in series.counts if not count_problem(c)],
                       [p for p in series.latencies if not latency_problem(p)])


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
    series: dict[str, dict[str, Any]] = field(default_factory=dict)  # the valid points read, per deployed model
    data_problems: tuple[str, ...] = ()  # every point that could not be judged, named

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "window": {"start": round(self.window[0], 3), "end": round(self.window[1], 3),
                                                    "seconds": round(self.window[1] - self.window[0], 1)},
                "canary": self.canary.as_dict(), "baseline": self.baseline.as_dict(),
                "failures": list(self.failures), "series": self.series, "data_problems": list(self.data_problems)}


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
    problems = data_problems(read, [canary_id, *serving])
    clean = {dm: valid_points(s) for dm, s in read.items()}
    canary = window_stats([clean[canary_id]] if canary_id in clean else [])
    baseline = window_stats(clean[i] for i in serving if i in clean)
    evidence = _series_evidence(clean)
    seconds = window[1] - window[0]
    if problems:
        more = len(problems) - MAX_PROBLEMS_SHOWN
        reason = ("bake inconclusive (never a pass): Cloud Monitoring returned points that cannot be judged: "
                  + "; ".join(problems[:MAX_PROBLEMS_SHOWN]) + (f"; and {more} more" if more > 0 else ""))
        return BakeResult(INCONCLUSIVE, window, canary, baseline, (reason,), evidence, tuple(problems))
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
