"""The bake's decision rule (``bake.judge_bake``), pure: series as Cloud Monitoring
answers them, built by hand, judged against the documented margins."""

from __future__ import annotations

import pytest
from tune2serve.components.verify_traffic.bake import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    BakePolicy,
    bake,
    judge_bake,
    percentile,
)
from tune2serve.components.vertex.monitoring import (
    CountPoint,
    LatencyPoint,
    ModelSeries,
    bucket_bounds,
)

BOUNDS = (10.0, 20.0, 40.0, 80.0, 160.0, float("inf"))


def latency(counts: tuple[int, ...], start: float = 0.0) -> LatencyPoint:
    return LatencyPoint(start, start + 1, sum(counts), 0.0, BOUNDS[:len(counts)], counts)


def model(ok: int, errors: int = 0, lat: tuple[int, ...] = (), code: str = "503") -> ModelSeries:
    counts = [CountPoint(0, 1, "200", ok)] + ([CountPoint(0, 1, code, errors)] if errors else [])
    return ModelSeries(counts, [latency(lat or (0, ok))])


def test_a_canary_as_good_as_the_serving_model_passes() -> None:
    read = {"new": model(100, 1, (0, 100)), "old": model(900, 9, (0, 900))}
    result = judge_bake(read, "new", ["old", "new"], BakePolicy(bake_s=60), (0.0, 60.0))
    assert result.verdict == PASSED and result.failures == ()
    assert (result.canary.requests, result.canary.errors, result.baseline.requests) == (101, 1, 909)
    assert result.as_dict()["series"]["new"]["response_count"][1] == {"start": 0, "end": 1, "response_code": "503",
                                                                      "count": 1}


def test_error_rate_above_the_margin_fails_and_says_by_how_much() -> None:
    read = {"new": model(95, 5), "old": model(1000)}
    result = judge_bake(read, "new", ["old"], BakePolicy(max_error_rate_delta=0.01), (0.0, 30.0))
    assert result.verdict == FAILED
    assert result.failures == (("bake: over 30 s of real traffic the canary's error rate 5.0% (5/100) exceeds the "
                                "serving models' 0.0% (0/1000) by more than 1.0%"),)
    assert judge_bake(read, "new", ["old"], BakePolicy(max_error_rate_delta=0.06)).verdict == PASSED


def test_the_margin_is_relative_to_the_serving_models_own_errors() -> None:
    read = {"new": model(90, 10), "old": model(900, 100)}  # both 10 %: the canary is no worse
    assert judge_bake(read, "new", ["old"], BakePolicy()).verdict == PASSED


@pytest.mark.parametrize("code", ["500", "429", "404", "5xx"])
def test_every_non_2xx_code_is_an_error(code: str) -> None:
    read = {"new": model(50, 50, code=code), "old": model(500)}
    assert judge_bake(read, "new", ["old"], BakePolicy()).canary.errors == 50


def test_p95_latency_above_the_ratio_fails() -> None:
    slow = model(100, lat=(0, 0, 0, 50, 50))  # p95 in the (80, 160] bucket
    fast = model(100, lat=(0, 100))  # p95 in (10, 20]
    result = judge_bake({"new": slow, "old": fast}, "new", ["old"], BakePolicy(max_latency_ratio=1.5))
    assert (result.canary.p95_ms, result.baseline.p95_ms) == (160.0, 20.0)
    assert result.verdict == FAILED and "p95 latency 160 ms exceeds 1.5 x the serving models' 20 ms" in result.failures[0]
    assert judge_bake({"new": slow, "old": fast}, "new", ["old"], BakePolicy(max_latency_ratio=8)).verdict == PASSED


@pytest.mark.parametrize("read", [
    {},  # no traffic at all
    {"old": model(500)},  # the canary got nothing
    {"new": model(5), "old": model(500)},  # below min_requests
    {"new": model(100)},  # nothing to compare with
], ids=["nothing", "no-canary", "too-few", "no-baseline"])
def test_too_little_traffic_is_inconclusive_not_success(read: dict[str, ModelSeries]) -> None:
    result = judge_bake(read, "new", ["old"], BakePolicy(min_requests=20), (0.0, 10.0))
    assert result.verdict == INCONCLUSIVE and not result.passed
    assert "too little real traffic to judge" in result.failures[0]


def test_percentile_of_merged_distributions() -> None:
    points = [latency((1, 1, 1, 1)), latency((0, 0, 0, 0, 0, 16))]  # 20 samples, 16 in overflow
    assert percentile(points, 95) == 160.0  # overflow: its lower bound
    assert percentile([latency((10, 10))], 50) == 10.0
    assert percentile([], 95) is None


def test_bucket_bounds_for_each_kind_of_options() -> None:
    from google.api import distribution_pb2

    exp = distribution_pb2.Distribution.BucketOptions(
        exponential_buckets={"num_finite_buckets": 3, "growth_factor": 2.0, "scale": 1.0})
    assert bucket_bounds(exp, 5) == (1.0, 2.0, 4.0, 8.0, float("inf"))
    lin = distribution_pb2.Distribution.BucketOptions(linear_buckets={"num_finite_buckets": 2, "width": 5, "offset": 0})
    assert bucket_bounds(lin, 4) == (0.0, 5.0, 10.0, float("inf"))
    explicit = distribution_pb2.Distribution.BucketOptions(explicit_buckets={"bounds": [1.0, 3.0]})
    assert bucket_bounds(explicit, 2) == (1.0, 3.0)


def test_bake_holds_for_its_duration_renewing_the_lease_then_reads_that_window() -> None:
    now = [1000.0]
    renewals, windows = [], []

    def sleep(s: float) -> None:
        now[0] += s

    def read(start: float, end: float) -> dict[str, ModelSeries]:
        windows.append((start, end))
        return {"new": model(50), "old": model(500)}

    result = bake(read, "new", ["old"], BakePolicy(bake_s=150), renew=lambda: renewals.append(now[0]),
                  renew_every_s=60, clock=lambda: now[0], sleep=sleep)
    assert windows == [(1000.0, 1150.0)] and renewals == [1060.0, 1120.0]
    assert result.verdict == PASSED and result.window == (1000.0, 1150.0)


@pytest.mark.parametrize("policy, message", [
    (BakePolicy(bake_s=-1), "--bake-s: '-1' is out of range; expected a number from 0 to 86400 (seconds)"),
    (BakePolicy(bake_s=float("inf")), "--bake-s: 'inf' is not a finite number"),
    (BakePolicy(max_error_rate_delta=1.5), "--max-error-rate-delta: '1.5' is out of range; expected a number from 0, "
                                           "below 1"),
    (BakePolicy(max_latency_ratio=0.5), "--max-latency-ratio: '0.5' is out of range; expected a number from 1 to 100"),
    (BakePolicy(max_latency_ratio=float("nan")), "--max-latency-ratio: 'nan' is not a finite number"),
    (BakePolicy(min_requests=0), "--min-bake-requests: '0' is out of range; expected a whole number from 1"),
])
def test_unusable_policies_are_named(policy: BakePolicy, message: str) -> None:
    assert policy.problem().startswith(message)


def test_the_bake_evidence_reaches_json_metrics_markdown_and_the_html_chart() -> None:
    from dataclasses import replace

    from tune2serve.components.verify_traffic.checks import Policy, judge_step
    from tune2serve.components.verify_traffic.report import html, markdown
    from tune2serve.components.verify_traffic.verify import VerifyResult

    from tests.verify_traffic.simulate import NEW, OLD, endpoint_state, routed

    split = {OLD: 50, NEW: 50}
    read = {NEW: ModelSeries([CountPoint(10, 11, "200", 30), CountPoint(11, 12, "503", 20)],
                             [latency((0, 30), 10)]),
            OLD: ModelSeries([CountPoint(10, 11, "200", 50), CountPoint(11, 12, "200", 50)],
                             [latency((0, 50), 10), latency((0, 50), 11)])}
    verdict = judge_bake(read, NEW, [OLD], BakePolicy(bake_s=2), (10.0, 12.0))
    step = judge_step(50, NEW, split, endpoint_state(split), routed(55, 0.5, 1), Policy())
    step = replace(step, bake=verdict, failures=step.failures + verdict.failures)
    result = VerifyResult("rolled_back", "projects/p/locations/l/endpoints/9", "projects/p/locations/l/models/m",
                          {OLD: 100}, [step], reason=verdict.failures[0], mode="promotion")
    baked = result.as_json()["evidence"]["steps"][0]["bake"]
    assert baked["verdict"] == "failed" and baked["canary"]["errors"] == 20 and baked["window"]["seconds"] == 2.0
    assert [p["count"] for p in baked["series"][OLD]["response_count"]] == [50, 50]
    assert result.metrics()["step1_bake_canary_error_rate"] == 0.4
    assert "Bake 2 s on real traffic (Cloud Monitoring): **failed**" in markdown(result)
    page = html(result)
    assert '<section id="bake-1" data-verdict="failed">' in page and '<svg id="bake-chart-1"' in page
    assert page.count("<circle") == 7  # candidate: 2 error-rate points + 1 p95; serving: 2 + 2
    assert "candidate at 1 s: error rate 100 %" in page  # the second sample: 20 of 20 failed


@pytest.mark.parametrize("flags, message", [
    (["--bake-s=-5"], "argument --bake-s: '-5' is out of range"),
    (["--bake-s", "60", "--max-latency-ratio", "0.9"], "argument --max-latency-ratio: '0.9' is out of range"),
    (["--bake-s", "60", "--min-bake-requests", "0"], "argument --min-bake-requests: '0' is out of range"),
])
def test_bad_bake_flags_are_usage_errors_before_any_call(flags: list[str], message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tune2serve.cli.main import main

    with pytest.raises(SystemExit) as exited:  # argparse refuses it while parsing
        main(["verify-traffic", "projects/p/locations/r/endpoints/1", "--project", "p", "--region", "r",
              "--model", "projects/p/locations/r/models/2", *flags])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bake_without_a_model_to_promote_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from tune2serve.cli.main import main

    assert main(["verify-traffic", "1", "--project", "p", "--region", "r", "--bake-s", "60"]) == 2
    assert "--bake-s bakes a canary: it needs --model" in capsys.readouterr().err


def test_the_local_stack_needs_its_monitoring_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from tune2serve.components.errors import UsageError
    from tune2serve.components.vertex.clients import VertexTarget
    from tune2serve.components.vertex.monitoring import metric_client

    monkeypatch.delenv("TUNE2SERVE_MONITORING_API_ENDPOINT", raising=False)
    with pytest.raises(UsageError, match="TUNE2SERVE_MONITORING_API_ENDPOINT is not set"):
        metric_client(VertexTarget("p", "r", "http://127.0.0.1:1"))
