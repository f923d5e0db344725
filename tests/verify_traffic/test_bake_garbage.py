"""The bake's judge on garbage from Cloud Monitoring: generated series (hypothesis), one
point corrupted in a way the API should never answer but a broken exporter, a proxy or a
forged answer can — a negative count, a negative bucket count, a NaN/Inf bound or mean,
unsorted bounds, counts that do not add up. The verdict is *inconclusive*, never a pass,
and the reason names the deployed model, the metric and what was wrong; the evidence
stays valid JSON (no NaN) and the report renders.

(The local stack's Cloud Monitoring serves what its data plane really answered and has
no fault that corrupts points, so these are judged through the pure function only.)"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.verify_traffic.bake import (
    INCONCLUSIVE,
    PASSED,
    BakePolicy,
    data_problems,
    judge_bake,
)
from tune2serve.components.vertex.monitoring import CountPoint, LatencyPoint, ModelSeries

CANARY, SERVING = "111", "222"
POLICY = BakePolicy(bake_s=60, min_requests=20)
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None)


@st.composite
def latency_points(draw: st.DrawFn, start: float) -> LatencyPoint:
    finite = draw(st.lists(st.floats(0.5, 1e5, allow_nan=False), min_size=1, max_size=8, unique=True))
    bounds = (*sorted(finite), math.inf)
    counts = tuple(draw(st.lists(st.integers(0, 500), min_size=len(bounds), max_size=len(bounds))))
    mean = draw(st.floats(0, 1e5, allow_nan=False))
    return LatencyPoint(start, start + 1, sum(counts), mean, bounds, counts)


@st.composite
def model_series(draw: st.DrawFn, ok: int) -> ModelSeries:
    """A healthy deployed model: ``ok`` answers at least, few errors, its latencies."""
    n = draw(st.integers(1, 4))
    counts = [CountPoint(float(i), float(i + 1), "200", ok + draw(st.integers(0, 50))) for i in range(n)]
    counts += [CountPoint(float(i), float(i + 1), "503", draw(st.integers(0, 1))) for i in range(n)]
    return ModelSeries(counts, [draw(latency_points(float(i))) for i in range(n)])


def _corrupt_count(p: CountPoint, kind: str) -> CountPoint:
    return {"negative count": replace(p, count=-p.count - 1),
            "float count": replace(p, count=float("nan")),
            "reversed interval": replace(p, start=p.end + 5)}[kind]


def _corrupt_latency(p: LatencyPoint, kind: str, i: int) -> LatencyPoint:
    bounds, counts = list(p.bounds), list(p.counts)
    if kind == "negative count":
        return replace(p, count=-1)
    if kind == "negative bucket count":
        counts[i % len(counts)] = -counts[i % len(counts)] - 1
        return replace(p, counts=tuple(counts), count=sum(counts))
    if kind == "nan bound":
        bounds[i % len(bounds)] = math.nan
    elif kind == "-inf bound":
        bounds[0] = -math.inf
    elif kind == "inf bound before the last":
        bounds[0] = math.inf
        bounds += [math.inf]
        counts += [0]
    elif kind == "unsorted bounds":
        bounds = [bounds[1], bounds[0], *bounds[2:]] if len(bounds) > 2 else [5.0, 5.0]
        counts = counts[:len(bounds)] + [0] * (len(bounds) - len(counts))
        return replace(p, bounds=tuple(bounds), counts=tuple(counts), count=sum(counts))
    elif kind == "counts do not add up":
        return replace(p, count=p.count + 1 + i)
    elif kind == "nan mean":
        return replace(p, mean_ms=math.nan)
    elif kind == "inf mean":
        return replace(p, mean_ms=math.inf)
    elif kind == "negative mean":
        return replace(p, mean_ms=-1.0 - i)
    elif kind == "bounds for other counts":
        return replace(p, bounds=p.bounds[:-1] or (1.0, 2.0))
    return replace(p, bounds=tuple(bounds), counts=tuple(counts))


COUNT_KINDS = ["negative count", "float count", "reversed interval"]
LATENCY_KINDS = ["negative count", "negative bucket count", "nan bound", "-inf bound", "inf bound before the last",
                 "unsorted bounds", "counts do not add up", "nan mean", "inf mean", "negative mean",
                 "bounds for other counts"]


@st.composite
def corrupted(draw: st.DrawFn) -> tuple[dict[str, ModelSeries], str, str, str]:
    """A read in which the canary is as good as the serving model (it would pass), then
    one point of one of them corrupted; returns (read, deployed model, metric, kind)."""
    read = {CANARY: draw(model_series(100)), SERVING: draw(model_series(900))}
    victim = draw(st.sampled_from([CANARY, SERVING]))
    series = read[victim]
    i = draw(st.integers(0, 50))
    if draw(st.booleans()):
        kind = draw(st.sampled_from(COUNT_KINDS))
        j = i % len(series.counts)
        series.counts[j] = _corrupt_count(series.counts[j], kind)
        return read, victim, "response_count", kind
    kind = draw(st.sampled_from(LATENCY_KINDS))
    j = i % len(series.latencies)
    series.latencies[j] = _corrupt_latency(series.latencies[j], kind, i)
    return read, victim, "prediction_latencies", kind


@SETTINGS
@given(read=st.fixed_dictionaries({CANARY: model_series(100), SERVING: model_series(900)}))
def test_valid_series_have_no_problems(read: dict[str, ModelSeries]) -> None:
    assert data_problems(read, [CANARY, SERVING]) == []
    result = judge_bake(read, CANARY, [SERVING], POLICY, (0.0, 60.0))
    assert result.data_problems == () and result.verdict != INCONCLUSIVE


@SETTINGS
@given(case=corrupted())
def test_garbage_is_inconclusive_never_a_pass_and_named(case: tuple[dict[str, ModelSeries], str, str, str]) -> None:
    read, victim, metric, kind = case
    result = judge_bake(read, CANARY, [SERVING], POLICY, (0.0, 60.0))
    assert result.verdict == INCONCLUSIVE and not result.passed, kind
    assert len(result.data_problems) == 1, (kind, result.data_problems)
    problem = result.data_problems[0]
    assert problem.startswith(f"deployed model {victim}: {metric}"), (kind, problem)
    [reason] = result.failures
    assert reason.startswith("bake inconclusive (never a pass): Cloud Monitoring returned points that cannot be "
                             "judged: ") and problem in reason
    json.dumps(result.as_dict(), allow_nan=False)  # the --json evidence stays JSON (the bad point is left out)


@SETTINGS
@given(case=corrupted(), extra=st.integers(0, 30))
def test_many_bad_points_are_all_in_the_evidence_and_a_few_in_the_reason(
        case: tuple[dict[str, ModelSeries], str, str, str], extra: int) -> None:
    read, victim, _, _ = case
    read[victim].counts.extend(CountPoint(100.0 + k, 101.0 + k, "200", -k - 1) for k in range(extra))
    result = judge_bake(read, CANARY, [SERVING], POLICY, (0.0, 60.0))
    assert result.verdict == INCONCLUSIVE and len(result.data_problems) == 1 + extra
    assert ("more" in result.failures[0]) is (1 + extra > 5)


def test_the_same_read_passes_once_the_bad_point_is_gone() -> None:
    """The control: what made the verdict inconclusive is the bad point, nothing else."""
    good = {CANARY: ModelSeries([CountPoint(0, 1, "200", 100)],
                                [LatencyPoint(0, 1, 100, 12.0, (10.0, 20.0, math.inf), (50, 50, 0))]),
            SERVING: ModelSeries([CountPoint(0, 1, "200", 900)],
                                 [LatencyPoint(0, 1, 900, 12.0, (10.0, 20.0, math.inf), (450, 450, 0))])}
    assert judge_bake(good, CANARY, [SERVING], POLICY).verdict == PASSED
    for bad in (LatencyPoint(0, 1, 100, 12.0, (math.nan, 20.0, math.inf), (50, 50, 0)),
                LatencyPoint(0, 1, 100, 12.0, (10.0, 20.0, math.inf), (150, -50, 0)),
                LatencyPoint(0, 1, 100, math.nan, (10.0, 20.0, math.inf), (50, 50, 0))):
        read = {**good, CANARY: ModelSeries(good[CANARY].counts, [bad])}
        assert judge_bake(read, CANARY, [SERVING], POLICY).verdict == INCONCLUSIVE
    read = {**good, SERVING: ModelSeries([CountPoint(0, 1, "200", 900), CountPoint(1, 2, "503", -1000)],
                                         good[SERVING].latencies)}
    result = judge_bake(read, CANARY, [SERVING], POLICY)
    assert result.verdict == INCONCLUSIVE
    assert result.data_problems == ("deployed model 222: response_count (response_code '503') point at 1: its count "
                                    "-1000 is not a count (negative or not a whole number)",)


def test_the_report_says_why_the_bake_was_inconclusive() -> None:
    from tune2serve.components.verify_traffic.checks import Policy, judge_step
    from tune2serve.components.verify_traffic.report import html, markdown
    from tune2serve.components.verify_traffic.verify import VerifyResult

    from tests.verify_traffic.simulate import NEW, OLD, endpoint_state, routed

    split = {OLD: 50, NEW: 50}
    step = judge_step(50, NEW, split, endpoint_state(split), routed(55, 0.5, 1), Policy())
    read = {NEW: ModelSeries([CountPoint(0, 1, "200", 100)],
                             [LatencyPoint(0, 1, 100, math.nan, (10.0, math.inf), (100, 0))]),
            OLD: ModelSeries([CountPoint(0, 1, "200", -5)], [])}
    verdict = judge_bake(read, NEW, [OLD], POLICY, (10.0, 70.0))
    step = replace(step, bake=verdict, failures=step.failures + verdict.failures)
    result = VerifyResult("rolled_back", "e", "m", {OLD: 100}, [step], reason="; ".join(verdict.failures),
                          mode="promotion")
    evidence: dict[str, Any] = json.loads(json.dumps(result.as_json(), allow_nan=False))
    baked = evidence["evidence"]["steps"][0]["bake"]
    assert baked["verdict"] == INCONCLUSIVE and len(baked["data_problems"]) == 2
    text = markdown(result)
    assert "its mean nan ms is not a finite, non-negative latency" in text
    assert "its count -5 is not a count" in text and f"deployed model {OLD}" in text
    assert "its count -5 is not a count" in html(result)
    assert all(math.isfinite(v) for v in result.metrics().values())
