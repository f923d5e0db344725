"""Rollback: the previous deployed models get their recorded shares back, the new one is
undeployed, and the outcome is recorded on the endpoint.

Idempotent: it acts only while the endpoint's record says a promotion is in its canary
state; afterwards the record says ``rolled_back`` and a second call does nothing. It
works from the record alone (see ``record.py``), so the step itself, the pipeline's
exit handler and an operator all roll back the same way. Order matters for clients:
traffic moves first, then (after a short drain) the new model is undeployed, so no
request is routed to a model that is going away.

Never over someone else's change (``guard.py``): a record marked "stopped" (the
promotion noticed an outside change) is left alone, and so is an endpoint whose split is
not one this promotion could have set — someone edited it from the console or gcloud,
and their split is authoritative. The split is restored as a compare-and-swap and the
canary undeployed without a split, so a change landing during the rollback is not
overwritten either. Then the action is "left_alone" and the record says "stopped".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.errors import PromotionError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.verify_traffic import guard
from tune2serve.components.verify_traffic import lease as lease_mod
from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
from tune2serve.components.verify_traffic.record import (
    CANARY,
    ROLLED_BACK,
    STOPPED,
    PromotionRecord,
    read_record,
    with_record,
)
from tune2serve.components.vertex.endpoints import EndpointState
from tune2serve.components.verify_traffic.traffic import normalize, rescale
from tune2serve.components.vertex.resources import sanitize_label_value

DRAIN_S = 1.0
UNNAMED_PIPELINE_RUN = "pipeline"  # what the component records when it is given no run id
_log = get_logger("verify_traffic.rollback")


@dataclass(frozen=True)
class RollbackResult:
    endpoint: str
    action: str  # "rolled_back" | "nothing_to_do" | "left_alone" (someone else changed the split)
    restored_split: dict[str, int]
    undeployed: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "action": self.action, "restored_split": self.restored_split,
                "undeployed": list(self.undeployed), "notes": list(self.notes)}


def new_deployments(state: EndpointState, previous: dict[str, int], new_id: str, model_id: str) -> list[str]:
    """The deployed models the promotion added: not in the previous split, and either the
    recorded new id or a deployment of the recorded Model (found even if the step died
    before it could record the id)."""
    return [d.id for d in state.deployed_models
            if d.id not in previous and (d.id == new_id or sanitize_label_value(d.model_id) == model_id)]


def rollback_endpoint(api: EndpointApi, endpoint: str, *, lease: lease_mod.Lease | None = None,
                      run_id: str | None = None, take_over_run: bool = False, reason: str = "",
                      drain_s: float = DRAIN_S, sleep: Callable[[float], None] = time.sleep) -> RollbackResult:
    """Rolls back the in-progress promotion recorded on ``endpoint`` — of run ``run_id``
    (or of an unnamed pipeline run) when given. Takes the endpoint's lease unless the
    caller holds it; with ``take_over_run``, also when a dead holder of ``run_id`` still
    holds it (the pipeline's exit handler cleaning up after its own run).

    Raises:
        PromotionError: a previous deployed model is gone, so there is nothing to restore.
        VertexError: Vertex refused a call; the record still says "canary", so running
            rollback again resumes where this one stopped.
    """
    if lease is None:
        with lease_mod.held(api, endpoint, run=run_id or "", take_over_run=take_over_run) as own:
            return rollback_endpoint(api, endpoint, lease=own, run_id=run_id, reason=reason, drain_s=drain_s,
                                     sleep=sleep)
    state = api.get_endpoint(endpoint)
    record = read_record(state.labels)
    ours = not run_id or record is None or record.run in (sanitize_label_value(run_id), UNNAMED_PIPELINE_RUN)
    if record is None or record.state != CANARY or not ours:
        log_event(_log, "rollback.nothing_to_do", f"{endpoint}: no promotion in progress; nothing to roll back",
                  endpoint=endpoint, record_state=record.state if record else None)
        notes: tuple[str, ...] = () if ours else (f"a promotion by another run ({record.run}) is in progress; "
                                                  "left alone",)
        if record is not None and record.state == STOPPED:
            notes += (f"the promotion by run {record.run} stopped when someone else changed the traffic split; "
                      "the endpoint is left as they set it",)
        return RollbackResult(endpoint, "nothing_to_do", state.serving_split(), notes=notes)
    why = guard.outside_change(state, record.previous_split,
                               new_deployments(state, record.previous_split, record.new_deployed_id, record.model_id),
                               record.shares)
    if why:
        return _left_alone(endpoint, lease, record, state, why)
    previous = {k: v for k, v in record.previous_split.items() if state.deployed_model(k) and v > 0}
    if record.previous_split and not previous:
        raise PromotionError(f"{endpoint}: none of the deployed models that served before the promotion "
                             f"({', '.join(record.previous_split)}) is deployed any more; nothing to restore. "
                             "Deploy a known-good model onto the endpoint by hand.")
    notes = []
    if previous != record.previous_split:
        notes.append(f"recorded split {record.previous_split}, restoring {rescale(previous)} (some are gone)")
    previous = rescale(previous)
    log_event(_log, "rollback.start", f"{endpoint}: rolling back to {previous}" + (f" ({reason})" if reason else ""),
              logging.WARNING, endpoint=endpoint, restore=previous)
    if previous and normalize(state.traffic_split) != previous:
        try:
            guard.move_split(api, endpoint, state.traffic_split, previous, "during the rollback")
        except guard.OutsideChangeError as e:
            return _left_alone(endpoint, lease, record, api.get_endpoint(endpoint), str(e))
    undeployed = []
    to_remove = new_deployments(state, previous, record.new_deployed_id, record.model_id)
    if to_remove:
        sleep(drain_s)
    for deployed_id in to_remove:
        api.undeploy_model(endpoint, deployed_id, {})  # no split: Vertex refuses if someone gave it traffic
        undeployed.append(deployed_id)
    done = PromotionRecord(ROLLED_BACK, record.run, record.model_id, record.new_deployed_id, {})
    lease.update_labels(lambda labels: with_record(labels, done))
    log_event(_log, "rollback.done", f"{endpoint}: rolled back; serving {previous}", endpoint=endpoint,
              undeployed=undeployed)
    return RollbackResult(endpoint, "rolled_back", previous, tuple(undeployed), tuple(notes))


def _left_alone(endpoint: str, lease: lease_mod.Lease, record: PromotionRecord, state: EndpointState,
                why: str) -> RollbackResult:
    """Someone else changed the split: record "stopped", change nothing else."""
    log_event(_log, "rollback.left_alone", f"{endpoint}: {why}; not rolled back", logging.WARNING, endpoint=endpoint,
              found=state.serving_split())
    lease.update_labels(lambda labels: with_record(labels, record.with_state(STOPPED)))
    return RollbackResult(endpoint, "left_alone", state.serving_split(), notes=(
        f"{why}: someone else changed the endpoint during the promotion, and their change stands — nothing was "
        "rolled back or undeployed",))


def try_rollback(api: EndpointApi, endpoint: str, **kwargs: Any) -> tuple[RollbackResult | None, str]:
    """``rollback_endpoint``, with a failure turned into a message (for callers that must
    report rather than raise)."""
    try:
        return rollback_endpoint(api, endpoint, **kwargs), ""
    except PromotionError as e:  # VertexError, EndpointBusyError included
        return None, str(e)
