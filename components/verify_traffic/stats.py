"""The statistics behind a canary decision: an exact binomial test of the observed
traffic share, the request count that gives that test its power, and latency
percentiles.

Why these choices (documented for operators reading a report):

* **The test.** Each request to the endpoint is routed independently by the
  trafficSplit, so the number answered by the canary is Binomial(n, p0) when routing is
  right. A two-sided exact binomial test (``scipy.stats.binomtest``) at significance
  ``alpha`` (default 0.01: a correct split is wrongly flagged at most 1 time in 100)
  says whether the observed count is compatible with the configured share.
* **The power.** We want to notice a routing error of half the canary's share (a 10 %
  canary that really serves 5 % or 15 %) with probability 0.9. The request count comes
  from the normal-approximation formula

      n = ((z_{1-a/2} * sqrt(p0 (1-p0)) + z_{1-b} * sqrt(p1 (1-p1))) / (p1 - p0))^2

  evaluated for p1 = p0 - d and p1 = p0 + d (d = p0/2, capped so p1 stays inside
  (0, 1)); the larger n is used, then capped at ``max_requests`` (the cap is reported:
  the achieved power at the capped n is computed exactly and shown). For p0 = 0.10 this
  gives 606 requests (exact power 0.985 against 5 %, 0.883 against 15 %: the
  normal approximation is slightly optimistic on the high side); for p0 = 0.50, 55.
* **At 100 %** a binomial test is degenerate: every answer must come from the new model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_SIGNIFICANCE = 0.01
DEFAULT_POWER = 0.9
DEFAULT_RELATIVE_EFFECT = 0.5
DEFAULT_MAX_REQUESTS = 1000
FULL_SHARE_REQUESTS = 20


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def detectable_alternatives(p0: float, relative_effect: float = DEFAULT_RELATIVE_EFFECT) -> list[float]:
    """The shares the test is sized to detect: p0 ± relative_effect·p0, kept in (0, 1)."""
    delta = relative_effect * p0
    out = [p for p in (p0 - delta, p0 + delta) if 0.0 < p < 1.0 and p != p0]
    return out


def sample_size(p0: float, p1: float, *, alpha: float = DEFAULT_SIGNIFICANCE, power: float = DEFAULT_POWER) -> int:
    """The textbook normal-approximation request count for a two-sided one-sample test of
    a proportion p0 against the alternative p1."""
    if not (0.0 < p0 < 1.0 and 0.0 < p1 < 1.0) or p0 == p1:
        raise ValueError(f"need 0 < p0, p1 < 1 and p0 != p1; got p0={p0}, p1={p1}")
    numerator = _z(1 - alpha / 2) * math.sqrt(p0 * (1 - p0)) + _z(power) * math.sqrt(p1 * (1 - p1))
    return math.ceil((numerator / (p1 - p0)) ** 2)


def exact_power(n: int, p0: float, p1: float, *, alpha: float = DEFAULT_SIGNIFICANCE) -> float:
    """The exact probability that the two-sided binomial test at ``alpha`` rejects p0 when
    the true share is p1, with n requests (used to report what a capped n achieves)."""
    from scipy.stats import binom, binomtest

    reject = [k for k in range(n + 1) if binomtest(k, n, p0).pvalue < alpha]
    return float(sum(binom.pmf(k, n, p1) for k in reject))


@dataclass(frozen=True)
class SamplePlan:
    """How many requests one canary step sends, and why."""

    share: float
    requests: int
    formula_requests: int | None
    alternatives: tuple[float, ...]
    alpha: float
    power: float
    capped: bool

    def as_dict(self) -> dict[str, object]:
        return {"share": self.share, "requests": self.requests, "formula_requests": self.formula_requests,
                "alternatives": list(self.alternatives), "alpha": self.alpha, "power": self.power,
                "capped": self.capped}


def plan_requests(
    share: float,
    *,
    alpha: float = DEFAULT_SIGNIFICANCE,
    power: float = DEFAULT_POWER,
    relative_effect: float = DEFAULT_RELATIVE_EFFECT,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    full_share_requests: int = FULL_SHARE_REQUESTS,
) -> SamplePlan:
    """The request count for a step whose canary share is ``share`` (0 < share ≤ 1)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"a canary share must be in (0, 1]; got {share}")
    if share >= 1.0:
        return SamplePlan(share, full_share_requests, None, (), alpha, power, False)
    alternatives = tuple(detectable_alternatives(share, relative_effect))
    formula = max(sample_size(share, p1, alpha=alpha, power=power) for p1 in alternatives)
    return SamplePlan(share, min(formula, max_requests), formula, alternatives, alpha, power, formula > max_requests)


@dataclass(frozen=True)
class ShareTest:
    """The binomial test of one step: ``k`` of ``n`` attributed answers came from the canary."""

    k: int
    n: int
    expected_share: float
    observed_share: float
    p_value: float
    alpha: float

    @property
    def rejected(self) -> bool:
        return self.p_value < self.alpha

    def as_dict(self) -> dict[str, object]:
        return {"k": self.k, "n": self.n, "expected_share": self.expected_share,
                "observed_share": round(self.observed_share, 4), "p_value": self.p_value,
                "alpha": self.alpha, "rejected": self.rejected}


def share_test(k: int, n: int, expected_share: float, *, alpha: float = DEFAULT_SIGNIFICANCE) -> ShareTest:
    """Two-sided exact binomial test of k canary answers out of n against ``expected_share``.
    At a share of 1.0 (or 0.0) any answer from elsewhere (or from the canary) rejects."""
    if n <= 0:
        return ShareTest(k, n, expected_share, 0.0, 0.0, alpha)
    observed = k / n
    if expected_share >= 1.0 or expected_share <= 0.0:
        p_value = 1.0 if observed == expected_share else 0.0
    else:
        from scipy.stats import binomtest

        p_value = float(binomtest(k, n, expected_share, alternative="two-sided").pvalue)
    return ShareTest(k, n, expected_share, observed, p_value, alpha)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100, linear interpolation), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
