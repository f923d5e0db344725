"""verify-traffic on the local stack when someone else edits the traffic split mid-canary
— through the real SDK (``aiplatform.Endpoint.update``, what the console and gcloud
call), from a hook inside a step, during the bake, and from a thread racing the
promotion: the promotion stops (outcome failed, exit 1), its evidence names the split it
expected and the one it found, the record says "stopped", and the endpoint stays exactly
as the other party set it — also after ``--rollback`` and after the pipeline's exit
handler. And the building block: a split change carrying a stale etag is refused."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tune2serve.components.errors import VertexError
from tune2serve.components.verify_traffic import guard
from tune2serve.components.verify_traffic import lease as lease_mod
from tune2serve.components.verify_traffic.bake import BakePolicy
from tune2serve.components.verify_traffic.canary import PromotionPlan, promote, real_metrics
from tune2serve.components.verify_traffic.checks import Policy
from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
from tune2serve.components.verify_traffic.record import read_record
from tune2serve.components.verify_traffic.rollback import rollback_endpoint
from tune2serve.components.verify_traffic.verify import real_probes
from tune2serve.components.vertex.clients import target

from tests.stack_fixtures import StackHandle
from tests.verify_traffic.conftest import Deployment
from tests.verify_traffic.test_on_stack import served_by

pytestmark = [pytest.mark.stack, pytest.mark.slow]
POLICY = Policy(latency_slack_ms=2000.0)  # a shared 2-core machine: latency is noise here
RUN = "outside-test"


def api_for(stack: StackHandle) -> EndpointApi:
    return EndpointApi(target(stack.project, stack.region))


def console_sets(endpoint: str, split: dict[str, int]) -> None:
    """What a person does in the console or with gcloud: the SDK's own update call."""
    from google.cloud import aiplatform

    aiplatform.Endpoint(endpoint).update(traffic_split=split)


def plan(prod: Deployment, staging: Deployment, bake: BakePolicy = BakePolicy()) -> PromotionPlan:
    return PromotionPlan(endpoint=prod.endpoint, model=staging.model, steps=(50, 100), run_id=RUN,
                         staging_endpoint=staging.endpoint, step_timeout_s=60, deploy_timeout_s=180,
                         lease_wait_s=0, drain_s=1.0, policy=POLICY, bake=bake)


@pytest.fixture
def restore(vertex_local: StackHandle, production: Deployment) -> Iterator[None]:
    """After each test, what an operator would do: the old model back at 100 %, the
    canary undeployed (so the next test starts from a production endpoint serving one)."""
    yield
    api = api_for(vertex_local)
    state = api.get_endpoint(production.endpoint)
    if state.serving_split() != {production.deployed_model_id: 100}:
        api.set_traffic_split(production.endpoint, {production.deployed_model_id: 100})
    for other in [i for i in state.deployed_ids() if i != production.deployed_model_id]:
        api.undeploy_model(production.endpoint, other, {})
    assert api.get_endpoint(production.endpoint).deployed_ids() == [production.deployed_model_id]


def assert_left_as_set(api: EndpointApi, production: Deployment, theirs: dict[str, int], canary: str) -> None:
    state = api.get_endpoint(production.endpoint)
    assert state.serving_split() == {k: v for k, v in sorted(theirs.items()) if v}
    assert sorted(state.deployed_ids()) == sorted([production.deployed_model_id, canary])  # nothing undeployed
    assert read_record(state.labels).state == "stopped"
    assert lease_mod.HOLDER not in state.labels


def test_a_stale_etag_cannot_overwrite_a_change(vertex_local: StackHandle, production: Deployment) -> None:
    api = api_for(vertex_local)
    before = api.get_endpoint(production.endpoint)
    console_sets(production.endpoint, {production.deployed_model_id: 100})  # any write changes the etag
    with pytest.raises(VertexError) as refused:
        api.set_traffic_split(production.endpoint, {production.deployed_model_id: 100}, etag=before.etag)
    assert refused.value.status_code in (409, 412) or "etag" in str(refused.value).lower()
    with pytest.raises(guard.OutsideChangeError, match=r"changed outside tune2serve now: expected \{'a': 100\}, found"):
        guard.move_split(api, production.endpoint, {"a": 100}, {"b": 100}, "now")  # read, compared, nothing written
    assert api.get_endpoint(production.endpoint).serving_split() == {production.deployed_model_id: 100}


def test_a_split_changed_during_a_step_stops_the_promotion_and_stands(
        vertex_local: StackHandle, production: Deployment, staging: Deployment, restore: None) -> None:
    from tune2serve.components.verify_traffic.finalize import finalize

    api = api_for(vertex_local)
    real, client = real_probes(api)
    theirs: dict[str, int] = {}

    def console_edit_then_probe(state: Any) -> Any:
        canary = next(i for i in state.deployed_ids() if i != production.deployed_model_id)
        theirs.update({production.deployed_model_id: 70, canary: 30})
        console_sets(production.endpoint, theirs)
        return real(state)

    try:
        outcome = promote(api, plan(production, staging), console_edit_then_probe)
    finally:
        client.close()
    canary = outcome.new_deployed_id
    assert outcome.outcome == "failed" and outcome.steps == []
    assert outcome.outside_change == {"when": "while the 50% step was probed",
                                      "expected_split": {production.deployed_model_id: 50, canary: 50},
                                      "found_split": dict(sorted(theirs.items()))}
    assert "changed outside tune2serve while the 50% step was probed" in outcome.reason
    assert outcome.rollback is None and any("nothing was changed after that" in n for n in outcome.notes)
    assert_left_as_set(api, production, theirs, canary)
    assert served_by(production, n=40) == {production.deployed_model_id, canary}  # both serve, as they set

    again = rollback_endpoint(api, production.endpoint)  # an operator's --rollback: leaves it
    assert again.action == "nothing_to_do" and any("stopped when someone else changed" in n for n in again.notes)
    done = finalize(project=vertex_local.project, region=vertex_local.region,
                    production_endpoint=production.endpoint, run_id=RUN, pipeline_state="FAILED")
    assert done.problems == [] and done.actions[0].startswith(f"{production.endpoint}: nothing to do; serving")
    assert_left_as_set(api, production, theirs, canary)


def test_a_split_changed_during_the_bake_stops_the_promotion(
        vertex_local: StackHandle, production: Deployment, staging: Deployment, restore: None) -> None:
    api = api_for(vertex_local)
    real, client = real_probes(api)
    theirs: dict[str, int] = {}
    changer: list[threading.Thread] = []

    def probe_then_edit_during_the_bake(state: Any) -> Any:
        canary = next(i for i in state.deployed_ids() if i != production.deployed_model_id)
        theirs.update({production.deployed_model_id: 100})  # a manual rollback, canary left at 0 %
        probe = real(state)

        def probe_and_schedule(n: int) -> Any:
            answers = probe(n)
            changer.append(threading.Timer(1.5, console_sets, (production.endpoint, theirs)))
            changer[0].start()  # lands 1.5 s into the 5-s bake that follows the probe
            return answers

        assert canary
        return probe_and_schedule

    try:
        outcome = promote(api, plan(production, staging, BakePolicy(bake_s=5.0, min_requests=1)),
                          probe_then_edit_during_the_bake, metrics=real_metrics(api))
    finally:
        client.close()
        for t in changer:
            t.join()
    canary = outcome.new_deployed_id
    assert outcome.outcome == "failed", outcome.reason
    assert outcome.outside_change == {"when": "during the bake at the 50% step",
                                      "expected_split": {production.deployed_model_id: 50, canary: 50},
                                      "found_split": {production.deployed_model_id: 100}}
    assert_left_as_set(api, production, theirs, canary)
    assert served_by(production) == {production.deployed_model_id}


def test_the_cli_exits_1_when_a_thread_edits_the_split_mid_canary(
        vertex_local: StackHandle, production: Deployment, staging: Deployment, restore: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A thread watches the endpoint like a person at the console and edits the split
    as soon as the canary serves; wherever the promotion is then (waiting, probing,
    baking, moving to the next step), it stops and the edit stands."""
    from tune2serve.cli.main import main

    api = api_for(vertex_local)
    edited: dict[str, Any] = {}
    stop = threading.Event()

    def watch_and_edit() -> None:
        watcher = api_for(vertex_local)
        while not stop.is_set():
            split = watcher.get_endpoint(production.endpoint).serving_split()
            canary = next((i for i in split if i != production.deployed_model_id), None)
            if canary:
                edited["split"] = {production.deployed_model_id: 85, canary: 15}
                console_sets(production.endpoint, edited["split"])
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch_and_edit)
    thread.start()
    try:
        code = main(["verify-traffic", production.endpoint, "--project", vertex_local.project, "--region",
                     vertex_local.region, "--model", staging.model, "--staging-endpoint", staging.endpoint,
                     "--steps", "50,100", "--bake-s", "3", "--min-bake-requests", "1", "--run-id", RUN, "--json"])
    finally:
        stop.set()
        thread.join()
        logging.getLogger("tune2serve").handlers.clear()
    out = json.loads(capsys.readouterr().out)
    canary = next(i for i in edited["split"] if i != production.deployed_model_id)
    assert code == 1 and out["outcome"] == "failed"
    change = out["evidence"]["outside_change"]
    assert change["found_split"] == dict(sorted(edited["split"].items()))
    assert change["expected_split"] == {production.deployed_model_id: 50, canary: 50}
    assert out["traffic_split"] == dict(sorted(edited["split"].items()))
    assert_left_as_set(api, production, edited["split"], canary)


def test_a_rollback_that_did_not_watch_leaves_a_split_it_never_set(
        vertex_local: StackHandle, production: Deployment, staging: Deployment, restore: None) -> None:
    """The verify-traffic task died mid-canary (record "canary", the canary at 10 %); a
    person then moved the split by hand; the exit handler must not "roll back" it."""
    from tests.verify_traffic.test_on_stack import _half_done_promotion
    from tune2serve.components.verify_traffic.finalize import finalize
    from tune2serve.components.verify_traffic.record import with_record

    api = api_for(vertex_local)
    canary = _half_done_promotion(api, production.endpoint, staging.model, RUN)
    dead = lease_mod.Lease(api, production.endpoint, "dead-task")
    dead.update_labels(lambda labels: with_record(labels, read_record(labels).with_shares(10)))  # as promote writes it
    theirs = {production.deployed_model_id: 60, canary: 40}
    console_sets(production.endpoint, theirs)
    done = finalize(project=vertex_local.project, region=vertex_local.region,
                    production_endpoint=production.endpoint, run_id=RUN, pipeline_state="FAILED")
    assert done.problems == [], done.problems
    assert done.actions[0].startswith(f"{production.endpoint}: left alone; serving")
    assert any("gives the canary" in a and "40%" in a and "10%" in a for a in done.actions), done.actions
    assert_left_as_set(api, production, theirs, canary)
