"""Sample sizes, the binomial test, percentiles and the traffic-split arithmetic."""

from __future__ import annotations

import pytest

from tune2serve.components.errors import UsageError
from tune2serve.components.verify_traffic import stats
from tune2serve.components.verify_traffic.traffic import canary_split, normalize, parse_steps, rescale


def test_sample_size_matches_the_textbook_formula() -> None:
    # ((2.5758·sqrt(.1·.9) + 1.2816·sqrt(.15·.85)) / .05)^2 = 605.5 → 606
    assert stats.sample_size(0.10, 0.15, alpha=0.01, power=0.9) == 606
    assert stats.sample_size(0.10, 0.05, alpha=0.01, power=0.9) == 443
    plan = stats.plan_requests(0.10)
    assert (plan.requests, plan.formula_requests, plan.capped) == (606, 606, False)
    assert stats.plan_requests(0.5).requests == 55
    assert stats.plan_requests(0.01, max_requests=1000).capped
    assert stats.plan_requests(1.0).requests == stats.FULL_SHARE_REQUESTS


def test_planned_n_has_the_promised_power() -> None:
    plan = stats.plan_requests(0.5)
    for p1 in plan.alternatives:
        assert stats.exact_power(plan.requests, 0.5, p1, alpha=0.01) >= 0.85


def test_share_test() -> None:
    assert not stats.share_test(60, 600, 0.10).rejected
    assert stats.share_test(0, 600, 0.10).rejected
    assert stats.share_test(180, 600, 0.10).rejected
    assert stats.share_test(20, 20, 1.0).p_value == 1.0
    assert stats.share_test(19, 20, 1.0).rejected


def test_percentile() -> None:
    assert stats.percentile([], 95) is None
    assert stats.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert stats.percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_canary_split_from_one_percentage() -> None:
    assert canary_split({"a": 100}, "0", 10) == {"0": 10, "a": 90}
    assert canary_split({"a": 100}, "n", 100) == {"n": 100}
    assert canary_split({"a": 50, "b": 50}, "n", 10) == {"a": 45, "b": 45, "n": 10}
    assert canary_split({"a": 70, "b": 30}, "n", 15) == {"a": 60, "b": 25, "n": 15}
    assert canary_split({"a": 1, "b": 1, "c": 1}, "n", 0) == {"a": 34, "b": 33, "c": 33}
    assert canary_split({"a": 90, "n": 10}, "n", 50) == {"a": 50, "n": 50}
    assert canary_split({}, "n", 10) == {"n": 100}
    assert rescale({"a": 45, "b": 45}) == {"a": 50, "b": 50}
    assert normalize({"b": 0, "a": 100}) == {"a": 100}
    with pytest.raises(UsageError):
        canary_split({"a": 100}, "n", 101)


def test_parse_steps() -> None:
    assert parse_steps("10,50,100", None) == [10, 50, 100]
    assert parse_steps("10,50", None) == [10, 50, 100]
    assert parse_steps(None, 25) == [25, 100]
    assert parse_steps(None, None) == [10, 100]
    assert parse_steps("20,100", 10) == [20, 100]  # steps, when given, replaces canary_percent (default 10)
    for bad in ("50,10", "0,100", "ten", "10,,100", "10,nan", "-10,100", ","):
        with pytest.raises(UsageError, match="--steps"):
            parse_steps(bad, None)
    for percent in (0, -1, 101, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="--canary-percent"):
            parse_steps(None, percent)
