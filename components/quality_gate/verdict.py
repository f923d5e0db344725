"""The verdict: promote / hold / reject, by the rule of POLICY.md (read it first).

Pure functions over counts, so the rule is tested by itself (hypothesis: monotonicity,
a garbage judge never promotes, the two orderings are interchangeable, a mirrored
comparison mirrors the verdict).

Per case, each judged ordering is turned into the candidate's result — win 1, tie ½,
loss 0 — and the two orderings are averaged; a case counts ("decides") only when both
orderings were judged. The win rate is the mean over deciding cases, with a 95 % Wilson
score interval (ties counted as half a success, which only widens the interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the two-sided 95 % normal quantile
DEFAULT_MARGIN = 0.05  # deterministic checks: the candidate may fail max(1, 5 %) more cases
DEFAULT_DELTA = 0.05  # non-inferiority margin of the judged win rate
DEFAULT_MIN_PASS_RATE = 0.9  # a first promotion (no baseline): the candidate's pass rate
MIN_DECIDING_CASES = 10  # fewer judged cases than this (or than half the cases) decide nothing
VERDICTS = ("reject", "hold", "promote")  # worst to best


def order_score(winner: str | None, candidate_is: str) -> float | None:
    """The candidate's result in one ordering: ``winner`` is the judge's "A", "B", "tie"
    or None (no judgment); the candidate was shown as ``candidate_is`` ("A" or "B")."""
    if winner is None:
        return None
    if winner == "tie":
        return 0.5
    return 1.0 if winner == candidate_is else 0.0


def case_score(first: float | None, second: float | None) -> float | None:
    """The two orderings averaged; None unless both were judged."""
    if first is None or second is None:
        return None
    return (first + second) / 2


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (0..1 each end);
    (0, 1) when n is 0: nothing is known."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(successes / n, 0.0), 1.0)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # the interval holds the estimate; at p = 0 or 1 rounding would leave it a hair outside
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def allowance(cases: int, margin: float = DEFAULT_MARGIN) -> int:
    """How many more failing cases than the baseline's the candidate may have: max(1, margin)."""
    return max(1, math.floor(margin * cases + 1e-9))


@dataclass(frozen=True)
class Settings:
    margin: float = DEFAULT_MARGIN
    delta: float = DEFAULT_DELTA
    min_pass_rate: float = DEFAULT_MIN_PASS_RATE
    min_deciding: int = MIN_DECIDING_CASES


@dataclass(frozen=True)
class Tally:
    """What the verdict is decided from. ``candidate_failed`` / ``baseline_failed``: cases
    failing at least one deterministic check, among the ``cases`` both endpoints answered
    (or the candidate alone, without a baseline); ``unmeasured``: cases the baseline never
    answered (left out of the comparison); ``scores``: each case's judged score, None where
    the judge gave no judgment; empty with no judge."""

    cases: int
    candidate_failed: int
    baseline_failed: int | None  # None: no baseline (a first promotion)
    scores: tuple[float | None, ...] = ()
    judged: bool = False
    unmeasured: int = 0


@dataclass(frozen=True)
class Verdict:
    verdict: str  # promote | hold | reject
    rule: str  # which rule made it, in words
    win_rate: float | None = None
    interval: tuple[float, float] | None = None
    deciding: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict, "rule": self.rule, "win_rate": self.win_rate,
                "interval": list(self.interval) if self.interval else None, "deciding_cases": self.deciding}


def win_rate(scores: Sequence[float | None]) -> tuple[float | None, tuple[float, float] | None, int]:
    """(win rate, 95 % Wilson interval, deciding cases) over the cases that were judged."""
    deciding = [s for s in scores if s is not None]
    if not deciding:
        return None, None, 0
    return sum(deciding) / len(deciding), wilson(sum(deciding), len(deciding)), len(deciding)


def decide(tally: Tally, settings: Settings = Settings()) -> Verdict:
    """The verdict of POLICY.md, rules tried in its order."""
    n = tally.cases
    if tally.baseline_failed is None:
        return _alone(tally, settings)
    slack = allowance(n + tally.unmeasured, settings.margin)
    if tally.unmeasured > slack:
        return Verdict("hold", f"the baseline did not answer {tally.unmeasured} case(s), more than the "
                               f"{slack} the margin allows: the comparison is incomplete")
    excess = tally.candidate_failed - tally.baseline_failed
    if n == 0:
        return Verdict("hold", "no case was answered by both endpoints")
    if excess > slack:
        return Verdict("reject", f"deterministic checks: the candidate fails {tally.candidate_failed} case(s), the "
                                 f"baseline {tally.baseline_failed}: {excess} more, beyond the margin of {slack} "
                                 f"(max(1, {settings.margin:g} x {n + tally.unmeasured}))")
    checks = (f"deterministic checks: candidate fails {tally.candidate_failed}, baseline "
              f"{tally.baseline_failed} of {n} (margin {slack})")
    if not tally.judged:
        return Verdict("promote", f"{checks}; no judge configured, the checks decide alone")
    rate, interval, deciding = win_rate(tally.scores)
    needed = max(settings.min_deciding, math.ceil(n / 2))
    if rate is None or interval is None or deciding < needed:
        return Verdict("hold", f"{checks}; the judge decided {deciding} case(s), fewer than the {needed} needed "
                               f"(max({settings.min_deciding}, half of {n})): an empty or unreadable judge decides "
                               "nothing", rate, interval, deciding)
    lo, hi = interval
    if hi < 0.5:
        return Verdict("reject", f"judge: win rate {rate:.3f}, 95 % interval [{lo:.3f}, {hi:.3f}] lies below 0.5: "
                                 "the candidate is significantly worse", rate, interval, deciding)
    if lo > 0.5 - settings.delta:
        return Verdict("promote", f"{checks}; judge: win rate {rate:.3f}, 95 % interval [{lo:.3f}, {hi:.3f}], lower "
                                  f"bound above 0.5 - {settings.delta:g}: not worse", rate, interval, deciding)
    return Verdict("hold", f"{checks}; judge: win rate {rate:.3f}, 95 % interval [{lo:.3f}, {hi:.3f}] neither shows "
                           f"the candidate worse (upper < 0.5) nor not worse (lower > 0.5 - {settings.delta:g}): "
                           "more cases would tell", rate, interval, deciding)


def _alone(tally: Tally, settings: Settings) -> Verdict:
    """No baseline: the candidate's deterministic pass rate against the threshold."""
    n = tally.cases
    if n == 0:
        return Verdict("hold", "the candidate answered no case")
    rate = (n - tally.candidate_failed) / n
    words = (f"no baseline (a first promotion): the candidate passes {n - tally.candidate_failed} of {n} case(s), "
             f"a pass rate of {rate:.3f}")
    if rate >= settings.min_pass_rate:
        return Verdict("promote", f"{words}, at least the {settings.min_pass_rate:g} required")
    return Verdict("reject", f"{words}, below the {settings.min_pass_rate:g} required")


def rank(verdict: str) -> int:
    return VERDICTS.index(verdict)


__all__ = ["DEFAULT_DELTA", "DEFAULT_MARGIN", "DEFAULT_MIN_PASS_RATE", "MIN_DECIDING_CASES", "Settings", "Tally",
           "VERDICTS", "Verdict", "allowance", "case_score", "decide", "order_score", "rank", "win_rate", "wilson"]
