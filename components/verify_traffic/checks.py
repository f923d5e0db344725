"""Judging one canary step (or a standalone endpoint) from the endpoint's state and the
answers to real requests. Pure: no network here, so it is tested with simulated routing.

A step passes when all of these hold (each failure is said in words in the report):

1. **Configured split** — the endpoint's trafficSplit equals the split the step set.
2. **Replicas** — every deployed model with a share has availableReplicaCount ≥
   minReplicaCount (and ≥ 1).
3. **Routing** — every answer came from a deployed model in the split, and the count
   answered by the new model passes the two-sided exact binomial test against its share
   (``stats.share_test``, significance ``Policy.significance``).
4. **Errors** — the new model's error rate (answers it gave with a non-2xx status, plus
   failed requests nobody claimed, counted against the new model to stay on the safe
   side) exceeds the serving models' by at most ``max_error_rate_increase`` (absolute;
   default 0.02 — with the request counts used, a single canary error fails a 10 % step:
   a canary is only promoted when it is as clean as the model it replaces).
5. **Latency** — the new model's p95 is at most ``max_latency_p95_ratio`` (default 3)
   times the serving models' p95 plus ``latency_slack_ms`` (default 250 ms: tiny CPU
   models answer in tens of milliseconds, where scheduling noise alone doubles a p95);
   checked when both sides have ``min_latency_samples`` successful answers.
6. **LLM signals** — what the answers say (``signals.py``): the new model's rate of
   answers cut off at max_tokens, of empty answers, its output length, time to first
   token and time per output token, against the serving model's answers in the same step
   (at 100 %, where the serving model gets none, against its answers in the last step
   that had some), within ``Policy.signals``' margins. A canary that never stops fails
   here even when every HTTP answer is a 200.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.verify_traffic import stats
from tune2serve.components.verify_traffic.probe import DEFAULT_MAX_TOKENS, Answer
from tune2serve.components.verify_traffic.signals import ModelSignals, SignalPolicy, SignalVerdict, compare, model_signals
from tune2serve.components.vertex.endpoints import EndpointState
from tune2serve.components.verify_traffic.traffic import normalize

UNATTRIBUTED = "(none)"


@dataclass(frozen=True)
class Policy:
    significance: float = stats.DEFAULT_SIGNIFICANCE
    power: float = stats.DEFAULT_POWER
    relative_effect: float = stats.DEFAULT_RELATIVE_EFFECT
    max_requests: int = stats.DEFAULT_MAX_REQUESTS
    full_share_requests: int = stats.FULL_SHARE_REQUESTS
    max_error_rate_increase: float = 0.02
    max_latency_p95_ratio: float = 3.0
    latency_slack_ms: float = 250.0
    min_latency_samples: int = 5
    signals: SignalPolicy = field(default_factory=SignalPolicy)
    max_tokens: int = DEFAULT_MAX_TOKENS  # per probe request

    def plan(self, share: float) -> stats.SamplePlan:
        return stats.plan_requests(share, alpha=self.significance, power=self.power,
                                   relative_effect=self.relative_effect, max_requests=self.max_requests,
                                   full_share_requests=self.full_share_requests)


@dataclass(frozen=True)
class ModelStats:
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 4),
                "p50_ms": _round(self.p50_ms), "p95_ms": _round(self.p95_ms)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def model_stats(answers: Sequence[Answer]) -> ModelStats:
    ok = [a.latency_ms for a in answers if a.ok]
    return ModelStats(len(answers), sum(1 for a in answers if not a.ok),
                      stats.percentile(ok, 50), stats.percentile(ok, 95))


def per_model(answers: Sequence[Answer]) -> dict[str, ModelStats]:
    groups: dict[str, list[Answer]] = {}
    for a in answers:
        groups.setdefault(a.deployed_model_id or UNATTRIBUTED, []).append(a)
    return {k: model_stats(v) for k, v in sorted(groups.items())}


@dataclass(frozen=True)
class StepResult:
    percent: int
    new_deployed_id: str
    configured_split: dict[str, int]
    endpoint_split: dict[str, int]
    plan: stats.SamplePlan
    test: stats.ShareTest
    models: dict[str, ModelStats]
    canary: ModelStats
    baseline: ModelStats | None
    failures: tuple[str, ...] = field(default_factory=tuple)
    elapsed_s: float = 0.0
    bake: Any = None  # bake.BakeResult, when the step was baked on real traffic
    signals: SignalVerdict | None = None  # the LLM signals of the answers (signals.py)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "percent": self.percent, "new_deployed_id": self.new_deployed_id,
            "configured_split": self.configured_split, "endpoint_split": self.endpoint_split,
            "plan": self.plan.as_dict(), "test": self.test.as_dict(),
            "models": {k: v.as_dict() for k, v in self.models.items()},
            "canary": self.canary.as_dict(), "baseline": self.baseline.as_dict() if self.baseline else None,
            "passed": self.passed, "failures": list(self.failures), "elapsed_s": round(self.elapsed_s, 2),
            "bake": self.bake.as_dict() if self.bake is not None else None,
            "signals": self.signals.as_dict() if self.signals is not None else None,
        }

    def serving_signals(self) -> ModelSignals | None:
        """The serving model's figures this step measured (None when it got no answers):
        what a later step without any compares with."""
        if self.signals is None or self.signals.reference != "this step" or self.signals.serving is None:
            return None
        return self.signals.serving


def _split_failures(configured: Mapping[str, int], state: EndpointState) -> list[str]:
    out = []
    if normalize(state.traffic_split) != normalize(configured):
        out.append(f"the endpoint's trafficSplit is {normalize(state.traffic_split)}, "
                   f"but the step configured {normalize(configured)}")
    for deployed_id, share in normalize(configured).items():
        dm = state.deployed_model(deployed_id)
        if dm is None:
            out.append(f"deployed model {deployed_id} has {share}% of the traffic but is not deployed")
        elif not dm.healthy:
            out.append(f"deployed model {deployed_id} has {dm.available_replica_count} available replicas, "
                       f"needs at least {max(1, dm.min_replica_count)} (minReplicaCount)")
    return out


def judge_signals(new_id: str, in_split: set[str], answers: Sequence[Answer], policy: SignalPolicy,
                  earlier: tuple[str, ModelSignals] | None = None) -> SignalVerdict:
    """Check 6: the new model's answers against the serving models' in this step, or,
    when none answered here, against ``earlier`` (where from, and their figures)."""
    canary = model_signals([a for a in answers if a.deployed_model_id == new_id])
    others = [a for a in answers if a.deployed_model_id not in (new_id, None) and a.deployed_model_id in in_split]
    serving = model_signals(others) if others else None
    if serving is not None and serving.answers >= policy.min_samples:
        return compare(canary, serving, policy, "this step")
    if earlier is not None:
        return compare(canary, earlier[1], policy, earlier[0])
    return compare(canary, serving, policy)


def judge_step(percent: int, new_id: str, configured: Mapping[str, int], state: EndpointState,
               answers: Sequence[Answer], policy: Policy, elapsed_s: float = 0.0,
               earlier: tuple[str, ModelSignals] | None = None) -> StepResult:
    """The verdict on one step; see the module docstring for the checks. ``earlier``:
    the serving model's LLM figures from an earlier step, for a step where it answers
    nothing (100 %)."""
    failures = _split_failures(configured, state)
    share = percent / 100.0
    plan = policy.plan(share)
    in_split = set(normalize(configured))
    attributed = [a for a in answers if a.deployed_model_id is not None]
    strangers = sorted({a.deployed_model_id for a in attributed if a.deployed_model_id not in in_split})
    if strangers:
        failures.append(f"answers came from deployed models outside the split: {', '.join(map(str, strangers))}")
    k = sum(1 for a in attributed if a.deployed_model_id == new_id)
    test = stats.share_test(k, len(attributed), share, alpha=policy.significance)
    if not attributed:
        failures.append(f"none of the {len(answers)} requests was answered by a deployed model")
    elif test.rejected:
        failures.append(f"the new model answered {k} of {len(attributed)} requests ({test.observed_share:.1%}); "
                        f"configured {share:.0%}: p = {test.p_value:.3g} < {policy.significance}")

    canary = model_stats([a for a in answers if a.deployed_model_id in (new_id, None)])
    others = [a for a in answers if a.deployed_model_id not in (new_id, None)]
    baseline = model_stats(others) if others else None
    base_rate = baseline.error_rate if baseline else 0.0
    if canary.requests and canary.error_rate > base_rate + policy.max_error_rate_increase:
        failures.append(f"the new model's error rate {canary.error_rate:.1%} ({canary.errors}/{canary.requests}) "
                        f"exceeds the serving model's {base_rate:.1%} by more than "
                        f"{policy.max_error_rate_increase:.0%}")
    ok_canary = sum(1 for a in answers if a.ok and a.deployed_model_id == new_id)
    ok_base = sum(1 for a in others if a.ok)
    if (baseline and canary.p95_ms is not None and baseline.p95_ms is not None
            and min(ok_canary, ok_base) >= policy.min_latency_samples):
        bound = policy.max_latency_p95_ratio * baseline.p95_ms + policy.latency_slack_ms
        if canary.p95_ms > bound:
            failures.append(f"the new model's p95 latency {canary.p95_ms:.0f} ms exceeds "
                            f"{policy.max_latency_p95_ratio:g} x the serving model's {baseline.p95_ms:.0f} ms "
                            f"+ {policy.latency_slack_ms:.0f} ms")
    signals = judge_signals(new_id, in_split, answers, policy.signals, earlier)
    failures += list(signals.failures)
    return StepResult(percent, new_id, normalize(configured), normalize(state.traffic_split), plan, test,
                      per_model(answers), canary, baseline, tuple(failures), elapsed_s, signals=signals)
