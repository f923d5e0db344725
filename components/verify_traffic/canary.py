"""Promotion onto a serving endpoint: the canary state machine.

    lease ─▶ record previous split ─▶ deployModel (0 %) ─▶ for each step:
        set split ─▶ wait for replicas ─▶ probe ─▶ judge ──(fail)──▶ rollback
        ─▶ below 100 %, with plan.bake.bake_s: bake (bake.py) ──(fail, inconclusive)──▶ rollback
    ─▶ 100 % ─▶ retire previous (after keep_previous_s) ─▶ record "promoted"
    ─▶ undeploy + delete the staging endpoint deploy made (failures reported, not fatal)

Anything that goes wrong between recording the previous split and the last step — a
failed check, a failed or timed-out Vertex call, an unexpected error, Ctrl-C — rolls
back before returning. If the rollback itself fails, the record stays "canary" so the
pipeline's exit handler (or ``tune2serve verify-traffic`` run again) finishes it.

Except a change made by someone else (``guard.py``): the split is compared with the one
this promotion last set before each of its own changes (made as compare-and-swaps) and
after each wait, probe and bake. When it differs, the promotion stops — outcome
"failed", the evidence saying what was expected and what was found, the record marked
"stopped" so that nothing rolls it back — and leaves the endpoint as the other party set
it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tune2serve.components.errors import BakeHeldError, PromotionError, StepFailedError, UsageError, VertexError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.verify_traffic import guard
from tune2serve.components.verify_traffic import lease as lease_mod
from tune2serve.components.verify_traffic.bake import INCONCLUSIVE, PASSED, BakePolicy, Reader, bake
from tune2serve.components.verify_traffic.checks import Policy, StepResult, judge_step
from tune2serve.components.verify_traffic.endpoint_api import (
    DEFAULT_DEPLOY_TIMEOUT_S,
    EndpointApi,
    build_deployed_model,
)
from tune2serve.components.verify_traffic.probe import ProbeFn
from tune2serve.components.verify_traffic.record import (
    CANARY,
    PROMOTED,
    STOPPED,
    PromotionRecord,
    read_record,
    with_record,
)
from tune2serve.components.verify_traffic.rollback import RollbackResult, rollback_endpoint, try_rollback
from tune2serve.components.vertex.endpoints import EndpointState
from tune2serve.components.verify_traffic.traffic import NEW_MODEL_KEY, canary_split, full_split, normalize
from tune2serve.components.vertex.resources import sanitize_label_value
from tune2serve.components.vertex.retry import PollPolicy

_log = get_logger("verify_traffic.canary")
ProbeFactory = Callable[[EndpointState], ProbeFn]
MetricsFactory = Callable[[EndpointState], Reader]  # the endpoint → its metrics reader


@dataclass(frozen=True)
class PromotionPlan:
    endpoint: str
    model: str
    steps: tuple[int, ...]
    run_id: str = "cli"
    staging_endpoint: str | None = None
    keep_previous_s: float = 0.0
    deploy_timeout_s: float = DEFAULT_DEPLOY_TIMEOUT_S
    step_timeout_s: float = 300.0
    lease_wait_s: float = lease_mod.DEFAULT_WAIT_S
    drain_s: float = 1.0
    policy: Policy = field(default_factory=Policy)
    bake: BakePolicy = field(default_factory=BakePolicy)
    forced: Any = None  # override.Override when force_promote overrode the quality gate: recorded in the labels

    def record(self, state: str, model_id: str, new_id: str, previous: dict[str, int]) -> PromotionRecord:
        """The endpoint's promotion record for this plan (with the override, if any)."""
        labels = self.forced.labels() if self.forced is not None else {}
        return PromotionRecord(state, self.run_id, model_id, new_id, previous, (), labels.get("verdict", ""),
                               labels.get("by", ""))


@dataclass
class PromotionOutcome:
    outcome: str  # "promoted" | "rolled_back" | "failed"
    endpoint: str
    model: str
    previous_split: dict[str, int]
    new_deployed_id: str = ""
    steps: list[StepResult] = field(default_factory=list)
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    rollback: RollbackResult | None = None
    final_state: EndpointState | None = None
    outside_change: dict[str, Any] | None = None  # what someone else changed, when the promotion stopped for it


SERVING_POLL = PollPolicy.every(1.0)  # a split taking effect: seconds on the local stack, so look every second


def wait_until_serving(api: EndpointApi, endpoint: str, configured: dict[str, int], *, timeout_s: float,
                       poll: PollPolicy = SERVING_POLL, sleep: Callable[[float], None] = time.sleep,
                       split_set: bool = False) -> EndpointState:
    """Polls until the endpoint routes ``configured`` on healthy replicas, or ``timeout_s``
    passes; returns the last state read either way (the step's checks judge it). With
    ``split_set`` (the caller set ``configured`` itself), another split is someone else's
    change: returned at once, for the caller to see."""
    deadline = time.monotonic() + timeout_s
    for interval in poll.intervals():
        state = api.get_endpoint(endpoint)
        same = normalize(state.traffic_split) == normalize(configured)
        ready = same and all((dm := state.deployed_model(i)) is not None and dm.healthy for i in normalize(configured))
        if ready or (split_set and not same) or time.monotonic() + interval > deadline:
            return state
        sleep(interval)
    raise AssertionError("unreachable: a poll policy's intervals do not end")


def staging_resources(api: EndpointApi, plan: PromotionPlan, serving: EndpointState) -> tuple[dict[str, Any], str | None, str]:
    """The dedicated resources to deploy the model with, copied from its deployment on the
    staging endpoint; returns (resources, staging endpoint or None, a note)."""
    staging = plan.staging_endpoint
    if not staging:
        model = api.get_model(plan.model)
        refs = [r for r in model.get("deployed_models") or [] if r.get("endpoint") and r["endpoint"] != plan.endpoint]
        staging = refs[0]["endpoint"] if refs else None
    if staging:
        state = api.get_endpoint(staging)
        mine = [d for d in state.deployed_models if d.model.split("@")[0] == plan.model.split("@")[0]]
        if mine:
            return mine[0].dedicated_resources(), staging, ""
    if serving.deployed_models:
        note = (f"{plan.model} is deployed on no staging endpoint; copied the machine spec and replica counts of "
                f"the serving deployed model {serving.deployed_models[0].id}")
        return serving.deployed_models[0].dedicated_resources(), staging, note
    raise UsageError(f"cannot tell which machine to deploy {plan.model} on: it is deployed nowhere and "
                     f"{plan.endpoint} serves nothing. Pass --staging-endpoint (the endpoint deploy made).")


def cleanup_staging(api: EndpointApi, staging: str) -> str:
    """Undeploys everything from the staging endpoint and deletes it; returns a note."""
    from tune2serve.components.vertex.endpoints import delete_endpoint

    try:
        delete_endpoint(api.vertex, staging, force=True)
    except VertexError as e:
        return f"could not remove the staging endpoint {staging}: {e}. Delete it by hand (it bills machine hours)."
    return f"removed the staging endpoint {staging}"


def retire_previous(api: EndpointApi, endpoint: str, new_id: str, previous: dict[str, int], keep_s: float,
                    drain_s: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Undeploys the models that served before (now at 0 %); failures become notes — the
    traffic is already 100 % on the new model, which is what matters to clients. A split
    changed meanwhile by someone else (a manual rollback in the keep-previous window) is
    theirs: ``OutsideChangeError``, nothing undeployed. Undeploys carry no split, so they
    never overwrite one (Vertex refuses to undeploy a model that has traffic)."""
    if keep_s > 0:
        log_event(_log, "promotion.grace", f"{endpoint}: keeping the previous models at 0% for {keep_s:.0f} s",
                  endpoint=endpoint)
    sleep(max(keep_s, drain_s))  # lets requests already routed to the previous models finish
    try:
        guard.check_split(api, endpoint, full_split(new_id), "while the previous models were kept at 0%")
    except VertexError as e:
        return [f"could not read {endpoint} again before undeploying the previous models ({e}); they stay "
                "deployed at 0%: undeploy them by hand to stop paying for them"]
    notes = []
    for old in previous:
        try:
            api.undeploy_model(endpoint, old, {})
            notes.append(f"undeployed the previous deployed model {old}")
        except VertexError as e:
            notes.append(f"could not undeploy the previous deployed model {old} (it serves 0%): {e}. "
                         "Undeploy it by hand to stop paying for it.")
            log_event(_log, "promotion.retire_failed", notes[-1], logging.WARNING, endpoint=endpoint)
    return notes


def real_metrics(api: EndpointApi) -> MetricsFactory:
    """Reads an endpoint's serving metrics through Cloud Monitoring's official client."""
    from tune2serve.components.vertex.monitoring import metric_client, read_endpoint_series

    client = metric_client(api.vertex)

    def for_endpoint(state: EndpointState) -> Reader:
        endpoint_id = state.name.rsplit("/", 1)[-1]
        return lambda start, end: read_endpoint_series(client, api.vertex.project, endpoint_id, start, end,
                                                       resource_name=state.name)

    return for_endpoint


def _bake_step(plan: PromotionPlan, lease: lease_mod.Lease, result: StepResult, state: EndpointState,
               metrics: MetricsFactory, sleep: Callable[[float], None]) -> StepResult:
    log_event(_log, "promotion.bake", f"{plan.endpoint}: step {result.percent}% baking {plan.bake.bake_s:g} s on "
              "real traffic", endpoint=plan.endpoint, percent=result.percent, bake_s=plan.bake.bake_s)
    serving = [i for i in result.configured_split if i != result.new_deployed_id]

    def renew() -> None:  # now and then during the bake: still our split? then renew the lease
        guard.check_split(lease.api, plan.endpoint, result.configured_split,
                          f"during the bake at the {result.percent}% step")
        lease.update_labels(lambda labels: labels)

    verdict = bake(metrics(state), result.new_deployed_id, serving, plan.bake, renew=renew, sleep=sleep)
    log_event(_log, "promotion.bake_done", f"{plan.endpoint}: bake at {result.percent}% {verdict.verdict}"
              + (": " + "; ".join(verdict.failures) if verdict.failures else ""),
              logging.INFO if verdict.passed else logging.WARNING, endpoint=plan.endpoint, verdict=verdict.verdict,
              canary=verdict.canary.as_dict(), baseline=verdict.baseline.as_dict())
    failures = result.failures if verdict.verdict == PASSED else result.failures + verdict.failures
    return replace(result, bake=verdict, failures=failures)


def _run_steps(api: EndpointApi, plan: PromotionPlan, lease: lease_mod.Lease, out: PromotionOutcome,
               resources: dict[str, Any], record: PromotionRecord, probe_for: ProbeFactory,
               sleep: Callable[[float], None], metrics: MetricsFactory | None = None) -> None:
    previous = out.previous_split
    deployed = build_deployed_model(plan.model, resources, f"tune2serve-canary-{sanitize_label_value(plan.run_id)}")
    log_event(_log, "promotion.deploy", f"{plan.endpoint}: deploying {plan.model} beside {previous} (0% until its "
              f"first step, {plan.steps[0]}%)", endpoint=plan.endpoint, model=plan.model, split=previous)
    guard.check_split(api, plan.endpoint, previous, "before the canary was deployed")
    out.new_deployed_id = api.deploy_model(plan.endpoint, deployed, {} if previous else {NEW_MODEL_KEY: 100},
                                           deadline_s=plan.deploy_timeout_s)
    current = record.with_new(out.new_deployed_id)
    lease.update_labels(lambda labels: with_record(labels, current))
    # deployed with no split: the new model gets 0 % and nothing else moves (on an endpoint
    # serving nothing it gets 100 %); the steps then move the split as compare-and-swaps
    expected = normalize(previous) if previous else full_split(out.new_deployed_id)
    earlier = None  # the serving model's LLM figures from the last step where it answered
    for percent in plan.steps:
        started = time.monotonic()
        configured = canary_split(previous, out.new_deployed_id, percent)
        if configured != expected:
            moving = current.with_shares(expected.get(out.new_deployed_id, 0), percent)  # either, while it moves
            lease.update_labels(lambda labels: with_record(labels, moving))
            guard.move_split(api, plan.endpoint, expected, configured, f"before the {percent}% step")
            expected, current = configured, current.with_shares(percent)
            lease.update_labels(lambda labels: with_record(labels, current))
        state = wait_until_serving(api, plan.endpoint, configured, timeout_s=plan.step_timeout_s, sleep=sleep,
                                   split_set=True)
        if normalize(state.traffic_split) != configured:
            raise guard.OutsideChangeError(plan.endpoint, configured, state.traffic_split,
                                           f"while the {percent}% step waited for its replicas")
        answers = probe_for(state)(plan.policy.plan(percent / 100).requests)
        result = judge_step(percent, out.new_deployed_id, configured, state, answers, plan.policy,
                            time.monotonic() - started, earlier)
        serving_signals = result.serving_signals()
        earlier = (f"the {percent}% step", serving_signals) if serving_signals is not None else earlier
        guard.check_split(api, plan.endpoint, configured, f"while the {percent}% step was probed")
        if result.passed and percent < 100 and plan.bake.bake_s > 0:
            result = _bake_step(plan, lease, result, state, metrics or real_metrics(api), sleep)
            guard.check_split(api, plan.endpoint, configured, f"during the bake at the {percent}% step")
            if result.bake is not None and result.bake.verdict == INCONCLUSIVE and plan.bake.on_inconclusive == "hold":
                out.steps.append(result)
                raise BakeHeldError(f"step {percent}%: " + "; ".join(result.bake.failures)
                                    + f"; held at {configured} (on_inconclusive=hold)")
        out.steps.append(result)
        log_event(_log, "promotion.step", f"{plan.endpoint}: step {percent}% "
                  + ("passed" if result.passed else "failed: " + "; ".join(result.failures)),
                  logging.INFO if result.passed else logging.WARNING, endpoint=plan.endpoint,
                  percent=percent, p_value=result.test.p_value, observed=result.test.observed_share)
        if not result.passed:
            raise StepFailedError(f"step {percent}%: " + "; ".join(result.failures))
        lease.update_labels(lambda labels: labels)  # renews the lease between steps


def _stopped(api: EndpointApi, plan: PromotionPlan, lease: lease_mod.Lease, out: PromotionOutcome,
             record: PromotionRecord, change: guard.OutsideChangeError) -> PromotionOutcome:
    """Someone else changed the split: stop, say what changed, mark the record "stopped"
    (so neither the exit handler nor --rollback acts on it) and touch nothing else."""
    out.outcome, out.reason, out.outside_change = "failed", str(change), change.as_dict()
    log_event(_log, "promotion.outside_change", str(change), logging.WARNING, endpoint=plan.endpoint,
              expected=change.expected, found=change.found)
    try:
        lease.update_labels(lambda labels: with_record(labels, (read_record(labels) or record).with_state(STOPPED)))
    except PromotionError as e:
        out.notes.append(f"could not mark the promotion stopped on the endpoint ({e}); a later rollback still "
                         "sees that the split is not one tune2serve set and leaves it alone")
    canary = out.new_deployed_id
    out.notes.append(f"nothing was changed after that: {plan.endpoint} serves {change.found} as the other party set "
                     "it" + (f"; the canary deployed model {canary} stays deployed (at "
                             f"{change.found.get(canary, 0)}%) — undeploy it yourself if it should go" if canary else "")
                     + ". The record on the endpoint says 'stopped': neither the pipeline's exit handler nor "
                     "`verify-traffic --rollback` acts on it")
    out.final_state = api.get_endpoint(plan.endpoint)
    return out


def promote(api: EndpointApi, plan: PromotionPlan, probe_for: ProbeFactory,
            sleep: Callable[[float], None] = time.sleep, metrics: MetricsFactory | None = None) -> PromotionOutcome:
    """Promotes ``plan.model`` onto ``plan.endpoint`` through ``plan.steps``, or rolls back
    (or, for an inconclusive bake under ``on_inconclusive="hold"``, leaves the canary at
    its step: outcome "failed", the record still "canary" for an operator's --rollback).
    Never raises for a failed check: the outcome says what happened. ``metrics`` reads
    the endpoint's serving metrics for a bake (default: Cloud Monitoring)."""
    with lease_mod.held(api, plan.endpoint, run=plan.run_id, wait_s=plan.lease_wait_s) as lease:
        state = api.get_endpoint(plan.endpoint)
        leftover = read_record(state.labels)
        if leftover is not None and leftover.state == CANARY:
            log_event(_log, "promotion.leftover", f"{plan.endpoint}: an earlier promotion (run {leftover.run}) "
                      "did not finish; rolling it back first", logging.WARNING, endpoint=plan.endpoint)
            rollback_endpoint(api, plan.endpoint, lease=lease, reason="leftover from an earlier run",
                              drain_s=plan.drain_s, sleep=sleep)
            state = api.get_endpoint(plan.endpoint)
        previous = state.serving_split()
        out = PromotionOutcome("failed", plan.endpoint, plan.model, previous)
        resources, staging, note = staging_resources(api, plan, state)
        if note:
            out.notes.append(note)
        model_id = plan.model.rsplit("/", 1)[-1].split("@")[0]
        # the canary's share as the deploy leaves it: 0 beside a serving model, else 100
        record = plan.record(CANARY, model_id, "", previous).with_shares(0 if previous else 100)
        lease.update_labels(lambda labels: with_record(labels, record))
        try:
            _run_steps(api, plan, lease, out, resources, record, probe_for, sleep, metrics)
        except guard.OutsideChangeError as e:
            return _stopped(api, plan, lease, out, record, e)
        except BakeHeldError as e:
            out.reason = str(e)
            out.notes.append(f"the canary {out.new_deployed_id} is held at its step for a decision: run "
                             f"`tune2serve verify-traffic {plan.endpoint} --rollback` to roll it back (the "
                             "pipeline's exit handler rolls back a failed run's canary by itself)")
            out.final_state = api.get_endpoint(plan.endpoint)
            return out
        except BaseException as e:  # noqa: BLE001 — any failure, even Ctrl-C, must roll back
            out.reason = str(e) or type(e).__name__
            out.rollback, error = try_rollback(api, plan.endpoint, lease=lease, reason=out.reason,
                                               drain_s=plan.drain_s, sleep=sleep)
            out.outcome = "rolled_back" if out.rollback and out.rollback.action == "rolled_back" else "failed"
            if out.rollback and out.rollback.action != "rolled_back":
                out.notes += list(out.rollback.notes)
            if error:
                out.notes.append(f"rollback did not finish: {error}. Run `tune2serve verify-traffic` again or "
                                 "let the pipeline's exit handler finish it.")
            out.final_state = api.get_endpoint(plan.endpoint)
            if not isinstance(e, Exception):
                raise
            return out
        try:
            out.notes += retire_previous(api, plan.endpoint, out.new_deployed_id, previous, plan.keep_previous_s,
                                         plan.drain_s, sleep)
        except guard.OutsideChangeError as e:
            return _stopped(api, plan, lease, out, record, e)
        done = plan.record(PROMOTED, model_id, out.new_deployed_id, {})
        lease.update_labels(lambda labels: with_record(labels, done))
        out.outcome = "promoted"
    if staging and staging != plan.endpoint:
        out.notes.append(cleanup_staging(api, staging))
    out.final_state = api.get_endpoint(plan.endpoint)
    return out
