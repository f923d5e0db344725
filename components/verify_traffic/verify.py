"""verify-traffic, top level: check a standalone endpoint, or promote a model onto a
serving endpoint (``canary.promote``); either way return one ``VerifyResult`` that the
CLI prints, the component turns into Metrics, and ``report.py`` renders.

Modes (DESIGN.md §2 step 5, §4):
* standalone (no production endpoint): ``endpoint`` must route 100 % to one deployed
  model (the deployment of ``model`` when given) with availableReplicaCount ≥
  minReplicaCount, and answer real requests — all of them, all from that model.
* promotion: ``model`` is promoted onto ``production_endpoint`` through ``steps``;
  ``endpoint`` (the staging endpoint deploy made) supplies the machine spec and is
  removed after a successful promotion.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components import ranges
from tune2serve.components.errors import UsageError
from tune2serve.components.verify_traffic.bake import BakePolicy
from tune2serve.components.verify_traffic.canary import (
    MetricsFactory,
    PromotionOutcome,
    PromotionPlan,
    ProbeFactory,
    promote,
    real_metrics,
    wait_until_serving,
)
from tune2serve.components.verify_traffic.checks import Policy, StepResult, judge_step
from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
from tune2serve.components.verify_traffic.probe import DEFAULT_MAX_TOKENS, http_probe
from tune2serve.components.vertex.endpoints import EndpointState
from tune2serve.components.verify_traffic.traffic import parse_steps

OUTCOMES = ("promoted", "verified", "rolled_back", "failed")


@dataclass
class VerifyResult:
    outcome: str
    endpoint: str
    model: str | None
    traffic_split: dict[str, int]
    steps: list[StepResult] = field(default_factory=list)
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    final_state: dict[str, Any] = field(default_factory=dict)
    previous_split: dict[str, int] = field(default_factory=dict)
    new_deployed_id: str = ""
    rollback: dict[str, Any] | None = None
    mode: str = "standalone"
    outside_change: dict[str, Any] | None = None  # {"when", "expected_split", "found_split"}: someone else's change
    override: dict[str, str] | None = None  # force_promote: {"reason", "overridden_verdict", "identity", "time"}
    thresholds: dict[str, float] = field(default_factory=dict)  # applied_thresholds(): the limits judged by

    @property
    def ok(self) -> bool:
        return self.outcome in ("promoted", "verified")

    def evidence(self) -> dict[str, Any]:
        return {"mode": self.mode, "endpoint": self.endpoint, "model": self.model, "reason": self.reason,
                "previous_split": self.previous_split, "new_deployed_id": self.new_deployed_id,
                "steps": [s.as_dict() for s in self.steps], "rollback": self.rollback, "notes": self.notes,
                "final_state": self.final_state, "outside_change": self.outside_change, "override": self.override,
                "thresholds": self.thresholds}

    def as_json(self) -> dict[str, Any]:
        """The --json object of DESIGN.md §4."""
        return {"outcome": self.outcome, "traffic_split": self.traffic_split, "evidence": self.evidence()}

    def metrics(self) -> dict[str, float]:
        """Flat KFP Metrics: per step, the observed share, p-value, n, and per deployed
        model its share, error rate and p95 latency."""
        out: dict[str, float] = {"promoted": float(self.outcome == "promoted"),
                                 "verified": float(self.outcome == "verified"),
                                 "rolled_back": float(self.outcome == "rolled_back"),
                                 "forced": float(self.override is not None)}
        for i, s in enumerate(self.steps, 1):
            out[f"step{i}_configured_percent"] = float(s.percent)
            out[f"step{i}_observed_share"] = round(s.test.observed_share, 4)
            out[f"step{i}_p_value"] = float(s.test.p_value)
            out[f"step{i}_requests"] = float(s.test.n)
            for dm, m in s.models.items():
                key = f"step{i}_dm_{dm if dm.isalnum() else 'unattributed'}"
                out[f"{key}_share"] = round(m.requests / max(1, sum(x.requests for x in s.models.values())), 4)
                out[f"{key}_error_rate"] = round(m.error_rate, 4)
                if m.p95_ms is not None:
                    out[f"{key}_p95_ms"] = round(m.p95_ms, 1)
            if s.signals is not None:  # the LLM signals of both sides, where measured
                for role, figures in (("canary", s.signals.canary), ("serving", s.signals.serving)):
                    for name, value in (figures.as_dict() if figures is not None else {}).items():
                        if name != "answers" and isinstance(value, (int, float)):
                            out[f"step{i}_{role}_{name}"] = float(value)
                out[f"step{i}_signals_passed"] = float(s.signals.passed)
            if s.bake is not None:
                out[f"step{i}_bake_passed"] = float(s.bake.passed)
                for role, w in (("canary", s.bake.canary), ("baseline", s.bake.baseline)):
                    out[f"step{i}_bake_{role}_requests"] = float(w.requests)
                    out[f"step{i}_bake_{role}_error_rate"] = round(w.error_rate, 4)
                    if w.p95_ms is not None:
                        out[f"step{i}_bake_{role}_p95_ms"] = round(w.p95_ms, 1)
        return out


def applied_thresholds(policy: Policy, bake: BakePolicy | None) -> dict[str, float]:
    """The limits a run was judged by, carried in its result: its report states them (a
    reader of a rollback must not have to know which defaults or flags applied). ``bake``
    is None where nothing is baked (a standalone check)."""
    out = {"significance": policy.significance, "max_error_rate_increase": policy.max_error_rate_increase,
           "max_latency_p95_ratio": policy.max_latency_p95_ratio, "latency_slack_ms": policy.latency_slack_ms,
           "min_latency_samples": float(policy.min_latency_samples)}
    sig = policy.signals  # the LLM signals' margins (signals.py)
    out.update(probe_max_tokens=float(policy.max_tokens), max_length_rate_delta=sig.max_length_rate_delta,
               max_empty_rate_delta=sig.max_empty_rate_delta, max_output_length_ratio=sig.max_output_length_ratio,
               max_ttft_ratio=sig.max_ttft_ratio, max_tpot_ratio=sig.max_tpot_ratio,
               signal_min_samples=float(sig.min_samples))
    out.update({k: v for k, v in (("max_length_rate", sig.max_length_rate), ("max_empty_rate", sig.max_empty_rate))
                if v is not None})
    if bake is not None:
        out.update(bake_s=bake.bake_s, bake_max_error_rate_delta=bake.max_error_rate_delta,
                   bake_max_latency_ratio=bake.max_latency_ratio, bake_min_requests=float(bake.min_requests))
    return out


def _judged_by(result: VerifyResult, thresholds: dict[str, float], forced: Any = None) -> VerifyResult:
    result.thresholds = thresholds
    result.override = forced.as_dict() if forced is not None else None
    return result


def real_probes(api: EndpointApi, concurrency: int = 4, max_tokens: int = DEFAULT_MAX_TOKENS
                ) -> tuple[ProbeFactory, Any]:
    """A probe factory sending real requests (at most ``max_tokens`` tokens each) to each
    state's dedicated DNS, and the HTTP client to close afterwards."""
    from tune2serve.components.vertex.clients import http_client

    client = http_client(api.vertex, timeout_s=30.0)

    def probe_for(state: EndpointState) -> Any:
        if not state.dedicated_endpoint_dns:
            raise UsageError(f"{state.name} has no dedicatedEndpointDns; verify-traffic needs a dedicated "
                             "endpoint (custom-weights deployments get one)")
        return http_probe(client, state.dedicated_endpoint_dns, state.name, concurrency=concurrency,
                          max_tokens=max_tokens)

    return probe_for, client


def check_standalone(api: EndpointApi, endpoint: str, model: str | None, probe_for: ProbeFactory, *,
                     policy: Policy = Policy(), timeout_s: float = 300.0) -> VerifyResult:
    state = api.get_endpoint(endpoint)
    if model:
        wanted = model.split("@")[0]
        candidates = [d.id for d in state.deployed_models if d.model.split("@")[0] == wanted]
    else:
        candidates = [k for k, v in state.traffic_split.items() if v == 100] or state.deployed_ids()[:1]
    if not candidates:
        return VerifyResult("failed", endpoint, model, state.serving_split(), reason=(
            f"{endpoint} has no deployment of {model}" if model else f"{endpoint} has no deployed model"),
            final_state=state.summary())
    target = candidates[0]
    started = time.monotonic()
    state = wait_until_serving(api, endpoint, {target: 100}, timeout_s=timeout_s)
    answers = probe_for(state)(policy.full_share_requests)
    step = judge_step(100, target, {target: 100}, state, answers, policy, time.monotonic() - started)
    return VerifyResult("verified" if step.passed else "failed", endpoint, model, state.serving_split(), [step],
                        reason="; ".join(step.failures), final_state=state.summary(), new_deployed_id=target)


def from_outcome(o: PromotionOutcome) -> VerifyResult:
    final = o.final_state
    return VerifyResult(o.outcome, o.endpoint, o.model, final.serving_split() if final else {}, o.steps, o.reason,
                        o.notes, final.summary() if final else {}, o.previous_split, o.new_deployed_id,
                        o.rollback.as_dict() if o.rollback else None, mode="promotion",
                        outside_change=o.outside_change)


def verify_traffic(*, project: str, region: str, endpoint: str, model: str | None = None,
                   production_endpoint: str | None = None, steps: Sequence[int] | str | None = None,
                   canary_percent: int | None = None, significance: float = 0.01, keep_previous_s: float = 0.0,
                   run_id: str = "cli", deploy_timeout_s: float = 1800.0, step_timeout_s: float = 300.0,
                   lease_wait_s: float = 60.0, policy: Policy | None = None,
                   probe_for: ProbeFactory | None = None, bake: BakePolicy | None = None,
                   metrics: MetricsFactory | None = None, quality_verdict: str = "",
                   force_promote: str = "") -> VerifyResult:
    """Standalone check of ``endpoint`` when ``production_endpoint`` is empty, else the
    promotion of ``model`` onto it (``endpoint`` being the staging endpoint, may be empty),
    each canary step below 100 % baked on real traffic for ``bake.bake_s`` seconds.
    ``quality_verdict`` (the quality gate's) of hold or reject promotes nothing unless
    ``force_promote`` gives a reason: then the override is audited (``override.py``)."""
    from tune2serve.components.verify_traffic import override as override_mod
    from tune2serve.components.vertex.clients import target
    from tune2serve.components.vertex.resources import endpoint_name, model_name

    ranges.SIGNIFICANCE.check(significance)
    ranges.KEEP_PREVIOUS_S.check(keep_previous_s)
    override_mod.check_verdict(quality_verdict)
    if force_promote:
        override_mod.check_reason(force_promote)
    vertex = target(project, region)
    schedule: list[int] = []
    if production_endpoint:  # usage errors before any network call
        if not model:
            raise UsageError("promotion needs the Model to promote (--model projects/P/locations/L/models/ID)")
        schedule = list(steps) if isinstance(steps, Sequence) and not isinstance(steps, str) else parse_steps(
            steps or None, canary_percent)
    policy = policy or Policy(significance=significance)
    bake = bake or BakePolicy()
    if bake.problem():
        raise UsageError(bake.problem())
    subject = production_endpoint or endpoint
    forced, refusal = override_mod.decide(quality_verdict, force_promote, vertex, endpoint=subject, model=model,
                                          run_id=run_id)
    if refusal:
        return VerifyResult("failed", subject, model, {}, reason=refusal,
                            mode="promotion" if production_endpoint else "standalone")
    api = EndpointApi(vertex)
    if production_endpoint and bake.bake_s > 0 and metrics is None:
        metrics = real_metrics(api)  # a missing setting is a usage error before anything is deployed
    client = None
    if probe_for is None:
        probe_for, client = real_probes(api, max_tokens=policy.max_tokens)
    try:
        if not production_endpoint:
            name = str(endpoint_name(endpoint, project, region))
            return _judged_by(check_standalone(api, name, str(model_name(model, project, region)) if model else None,
                                               probe_for, policy=policy, timeout_s=step_timeout_s),
                              applied_thresholds(policy, None), forced)
        assert model is not None
        plan = PromotionPlan(
            endpoint=str(endpoint_name(production_endpoint, project, region)),
            model=str(model_name(model, project, region)), steps=tuple(schedule), run_id=run_id or "cli",
            staging_endpoint=str(endpoint_name(endpoint, project, region)) if endpoint else None,
            keep_previous_s=keep_previous_s, deploy_timeout_s=deploy_timeout_s, step_timeout_s=step_timeout_s,
            lease_wait_s=lease_wait_s, policy=policy, bake=bake, forced=forced)
        return _judged_by(from_outcome(promote(api, plan, probe_for, metrics=metrics)),
                          applied_thresholds(policy, bake), forced)
    finally:
        if client is not None:
            client.close()
