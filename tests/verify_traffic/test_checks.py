"""The decision code on simulated routing draws, across many seeds (pure, fast): the
binomial test catches a 10 % split that really serves 0 % or 30 %, does not flag a
correct one more often than its significance, and the error and latency checks bite."""

from __future__ import annotations

from tune2serve.components.verify_traffic import stats
from tune2serve.components.verify_traffic.checks import Policy, judge_step
from tune2serve.components.verify_traffic.probe import Answer

from tests.verify_traffic.simulate import NEW, OLD, endpoint_state, routed

POLICY = Policy()
SPLIT_10 = {OLD: 90, NEW: 10}
SEEDS = range(200)


def judge(true_share: float, seed: int, split: dict[str, int] = SPLIT_10, **kw: float):  # type: ignore[no-untyped-def]
    n = POLICY.plan(split[NEW] / 100).requests
    return judge_step(split[NEW], NEW, split, endpoint_state(split), routed(n, true_share, seed, **kw), POLICY)


def test_a_correct_split_is_not_flagged_across_seeds() -> None:
    flagged = sum(not judge(0.10, seed).passed for seed in SEEDS)
    # the exact test at alpha 0.01 is conservative: expect ~1 % false alarms at most
    assert flagged <= 5, flagged


def test_a_split_that_serves_nothing_is_caught_every_time() -> None:
    results = [judge(0.0, seed) for seed in SEEDS]
    assert all(not r.passed for r in results)
    assert all("p = " in r.failures[0] for r in results)


def test_a_split_that_serves_30_percent_is_caught_every_time() -> None:
    assert all(not judge(0.30, seed).passed for seed in SEEDS)


def test_the_designed_effect_is_caught_with_the_designed_power() -> None:
    n = POLICY.plan(0.10).requests
    for true_share in (0.05, 0.15):
        power = stats.exact_power(n, 0.10, true_share)  # 0.985 and 0.883: the normal formula is a bit optimistic
        assert power >= 0.85
        caught = sum(not judge(true_share, seed).passed for seed in SEEDS) / len(SEEDS)
        assert caught >= power - 3 * (power * (1 - power) / len(SEEDS)) ** 0.5, (true_share, caught)


def test_a_fifty_percent_step_and_a_full_step() -> None:
    half = {OLD: 50, NEW: 50}
    assert judge(0.5, 1, half).passed
    assert not judge(0.2, 1, half).passed
    full = {NEW: 100}
    n = POLICY.plan(1.0).requests
    assert judge_step(100, NEW, full, endpoint_state(full), routed(n, 1.0, 3), POLICY).passed
    stray = [*routed(n - 1, 1.0, 3), Answer(OLD, True, 200, 10.0)]
    result = judge_step(100, NEW, full, endpoint_state(full), stray, POLICY)
    assert not result.passed and "outside the split" in result.failures[0]


def test_canary_errors_fail_the_step() -> None:
    result = judge(0.10, 7, new_error_rate=0.5)
    assert not result.passed
    assert any("error rate" in f for f in result.failures)
    assert result.canary.errors > 0 and result.baseline is not None and result.baseline.errors == 0


def test_unattributed_failures_count_against_the_canary() -> None:
    answers = [*routed(606, 0.10, 2), *[Answer(None, False, 0, 5.0, "ConnectError")] * 20]
    result = judge_step(10, NEW, SPLIT_10, endpoint_state(SPLIT_10), answers, POLICY)
    assert any("error rate" in f for f in result.failures)


def test_slow_canary_fails_the_step_and_noise_does_not() -> None:
    slow = judge(0.10, 4, new_latency_ms=2000.0)
    assert any("p95 latency" in f for f in slow.failures)
    assert judge(0.10, 4, new_latency_ms=60.0).passed  # within 3x + 250 ms


def test_split_and_replica_checks() -> None:
    answers = routed(606, 0.10, 5)
    wrong_split = judge_step(10, NEW, SPLIT_10, endpoint_state({OLD: 50, NEW: 50}), answers, POLICY)
    assert "trafficSplit" in wrong_split.failures[0]
    no_replicas = judge_step(10, NEW, SPLIT_10, endpoint_state(SPLIT_10, available=0), answers, POLICY)
    assert any("available replicas" in f for f in no_replicas.failures)
