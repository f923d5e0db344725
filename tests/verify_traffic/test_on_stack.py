"""verify-traffic against the local stack, through the real SDK and real requests: the
standalone check, the lease under two threads, rollback on a 503-answering canary and on
a replica killed mid-canary and on routing skewed from the split (each rollback run twice),
then a promotion under the load of
8 concurrent clients, a promotion whose old model cannot be undeployed, and the exit
handler after a run that died mid-canary. After every step, real requests show who
serves. The tests run in file order and share two deployments ("old" serving production,
"new" on its staging endpoint): the promotion under load consumes the staging endpoint."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tune2serve.components.errors import EndpointBusyError, VertexUserError
from tune2serve.components.verify_traffic import lease as lease_mod
from tune2serve.components.verify_traffic.canary import PromotionPlan, promote
from tune2serve.components.verify_traffic.checks import Policy
from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
from tune2serve.components.verify_traffic.probe import probe_request_body, send_one
from tune2serve.components.vertex.dedicated_endpoint import request_url
from tune2serve.components.verify_traffic.record import read_record
from tune2serve.components.verify_traffic.rollback import rollback_endpoint
from tune2serve.components.verify_traffic.verify import real_probes
from tune2serve.components.vertex.clients import target

from tests.stack_fixtures import StackHandle
from tests.verify_traffic.conftest import Deployment
from tests.verify_traffic.load import Load, ssl_context

pytestmark = [pytest.mark.stack, pytest.mark.slow]
POLICY = Policy(latency_slack_ms=2000.0)  # a shared 2-core machine: latency is noise here


def api_for(stack: StackHandle) -> EndpointApi:
    return EndpointApi(target(stack.project, stack.region))


def served_by(dep: Deployment, n: int = 12) -> set[str]:
    """Sends n real requests; asserts every one succeeds; returns who answered."""
    import httpx

    from tune2serve.components.vertex.clients import tls_verify

    with httpx.Client(verify=ssl_context(tls_verify()), timeout=30.0) as client:
        answers = [send_one(client, request_url("chat", dep.dns, dep.endpoint), probe_request_body()) for _ in range(n)]
    assert all(a.ok for a in answers), [a.error for a in answers if not a.ok]
    return {str(a.deployed_model_id) for a in answers}


def plan(prod: Deployment, staging: Deployment, steps: tuple[int, ...] = (50, 100)) -> PromotionPlan:
    return PromotionPlan(endpoint=prod.endpoint, model=staging.model, steps=steps, run_id="test-run",
                         staging_endpoint=staging.endpoint, step_timeout_s=60, deploy_timeout_s=180,
                         lease_wait_s=0, drain_s=1.0, policy=POLICY)


@pytest.fixture
def faults(stack_env: StackHandle) -> Iterator[Callable[..., Any]]:
    """``inject_fault`` on the stack; every fault is cleared after the test, on failure too."""
    from tune2serve.localstack.faults import inject_fault

    yield lambda kind, **kw: inject_fault(stack_env.api_endpoint, kind, **kw)
    inject_fault(stack_env.api_endpoint, "clear")


def test_standalone_endpoint_is_verified_with_the_cli(stack_env: StackHandle, production: Deployment,
                                                      capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from tune2serve.cli.main import main

    try:
        code = main(["verify-traffic", production.endpoint, "--project", stack_env.project, "--region",
                     stack_env.region, "--json", "--report-dir", str(tmp_path)])
    finally:  # the CLI bound the log handler to the captured stderr
        logging.getLogger("tune2serve").handlers.clear()
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["outcome"] == "verified"
    assert out["traffic_split"] == {production.deployed_model_id: 100}
    step = out["evidence"]["steps"][0]
    assert step["test"]["k"] == step["test"]["n"] == Policy().full_share_requests
    assert out["evidence"]["thresholds"]["significance"] == Policy().significance  # the limits judged by
    page = (tmp_path / "verify_traffic.html").read_text()
    assert 'id="outcome"' in page and '<section id="thresholds">' in page and "serving 100 %" in page


def test_two_promotions_never_interleave(stack_env: StackHandle, production: Deployment) -> None:
    api = api_for(stack_env)
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def take(holder: str) -> None:
        barrier.wait()
        try:
            results[holder] = lease_mod.acquire(api_for(stack_env), production.endpoint, holder, wait_s=0)
        except EndpointBusyError as e:
            results[holder] = e

    threads = [threading.Thread(target=take, args=(h,)) for h in ("holder-a", "holder-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    leases = [r for r in results.values() if isinstance(r, lease_mod.Lease)]
    busy = [r for r in results.values() if isinstance(r, EndpointBusyError)]
    assert len(leases) == 1 and len(busy) == 1, results
    assert busy[0].holder == leases[0].holder and leases[0].holder in str(busy[0])
    with pytest.raises(EndpointBusyError, match=f"holder {leases[0].holder}"):
        promote(api, plan(production, production), lambda s: lambda n: [])  # nothing changes while held
    leases[0].release()
    assert lease_mod.HOLDER not in api.get_endpoint(production.endpoint).labels
    assert served_by(production) == {production.deployed_model_id}


def _assert_rolled_back(stack: StackHandle, production: Deployment, outcome: Any) -> None:
    api = api_for(stack)
    assert outcome.outcome == "rolled_back", outcome.reason
    state = api.get_endpoint(production.endpoint)
    assert state.serving_split() == {production.deployed_model_id: 100}
    assert state.deployed_ids() == [production.deployed_model_id]
    assert read_record(state.labels).state == "rolled_back"
    assert served_by(production) == {production.deployed_model_id}
    again = rollback_endpoint(api, production.endpoint)  # safe to run twice
    assert again.action == "nothing_to_do" and again.restored_split == {production.deployed_model_id: 100}
    assert served_by(production) == {production.deployed_model_id}


def test_a_canary_answering_503_is_rolled_back(stack_env: StackHandle, production: Deployment,
                                               staging: Deployment, faults: Callable[..., Any]) -> None:
    api = api_for(stack_env)
    probe_for, client = real_probes(api)
    faults("http-503", target=staging.model, count=10_000)  # every answer of the canary, until cleared
    try:
        outcome = promote(api, plan(production, staging), probe_for)
    finally:
        client.close()
    faults("clear")  # the fault also hits the staging endpoint's deployment of the model
    assert any("error rate" in f for f in outcome.steps[0].failures)
    _assert_rolled_back(stack_env, production, outcome)
    assert served_by(staging) == {staging.deployed_model_id}  # the staging endpoint is untouched


def test_a_replica_killed_mid_canary_is_rolled_back(stack_env: StackHandle, production: Deployment,
                                                    staging: Deployment, faults: Callable[..., Any]) -> None:
    api = api_for(stack_env)
    real, client = real_probes(api)

    def kill_then_probe(state: Any) -> Any:
        canary = next(i for i in state.deployed_ids() if i != production.deployed_model_id)
        faults("kill-replica", target=canary)
        return real(state)

    try:
        outcome = promote(api, plan(production, staging), kill_then_probe)
    finally:
        client.close()
    _assert_rolled_back(stack_env, production, outcome)


@pytest.mark.parametrize("served", [0, 30])
def test_routing_skewed_from_the_split_is_caught_and_rolled_back(stack_env: StackHandle, production: Deployment,
                                                                 staging: Deployment, faults: Callable[..., Any],
                                                                 served: int) -> None:
    """Configured 10 %, the data plane really sends the canary 0 % or 30 %."""
    api = api_for(stack_env)
    probe_for, client = real_probes(api)
    faults("routing-skew", target=staging.model, percent=served)
    try:
        outcome = promote(api, plan(production, staging, steps=(10, 100)), probe_for)
    finally:
        client.close()
    [step] = outcome.steps
    assert step.configured_split == step.endpoint_split == {production.deployed_model_id: 90,
                                                            outcome.new_deployed_id: 10}
    assert step.test.n == Policy().plan(0.10).requests and step.test.p_value < POLICY.significance
    assert abs(step.test.observed_share - served / 100) < 0.06, step.test
    assert any("configured 10%: p = " in f for f in step.failures), step.failures
    _assert_rolled_back(stack_env, production, outcome)


def test_promotion_under_load_loses_no_request(stack_env: StackHandle, production: Deployment,
                                               staging: Deployment) -> None:
    api = api_for(stack_env)
    probe_for, client = real_probes(api)
    try:
        with Load(production.dns, production.endpoint, clients=8) as load:
            outcome = promote(api, plan(production, staging), probe_for)
    finally:
        client.close()
    assert outcome.outcome == "promoted", (outcome.reason, outcome.notes)
    assert load.failed == [] and load.ok > 0
    assert [s.percent for s in outcome.steps] == [50, 100] and all(s.passed for s in outcome.steps)
    state = api.get_endpoint(production.endpoint)
    assert state.deployed_ids() == [outcome.new_deployed_id]
    assert state.serving_split() == {outcome.new_deployed_id: 100}
    assert read_record(state.labels).state == "promoted"
    assert served_by(production) == {outcome.new_deployed_id}
    assert f"removed the staging endpoint {staging.endpoint}" in outcome.notes
    with pytest.raises(VertexUserError, match="404"):
        api.get_endpoint(staging.endpoint)


def test_old_model_that_cannot_be_undeployed_is_reported_and_traffic_is_right(
        stack_env: StackHandle, production: Deployment, staging: Deployment, faults: Callable[..., Any]) -> None:
    """After the promotion above, "new" serves production; promote "old" back while
    undeploying "new" fails: promoted (exit 0), the failure is a note, traffic is right."""
    from tune2serve.components.verify_traffic.verify import verify_traffic

    api = api_for(stack_env)
    [serving] = api.get_endpoint(production.endpoint).deployed_models
    assert serving.model == staging.model
    faults("undeploy-fails", target=serving.id)
    result = verify_traffic(project=stack_env.project, region=stack_env.region, endpoint="", model=production.model,
                            production_endpoint=production.endpoint, steps=[50, 100], run_id="undeploy-fails",
                            step_timeout_s=60, deploy_timeout_s=180, lease_wait_s=0, policy=POLICY)
    assert (result.outcome, result.ok) == ("promoted", True), result.reason
    assert result.traffic_split == {result.new_deployed_id: 100}
    assert any(n.startswith(f"could not undeploy the previous deployed model {serving.id} (it serves 0%)")
               and "injected fault undeploy-fails" in n for n in result.as_json()["evidence"]["notes"])
    assert served_by(production) == {result.new_deployed_id}
    state = api.get_endpoint(production.endpoint)
    assert sorted(state.deployed_ids()) == sorted([serving.id, result.new_deployed_id])
    api.undeploy_model(production.endpoint, serving.id, {result.new_deployed_id: 100})  # what the note asks
    assert api.get_endpoint(production.endpoint).deployed_ids() == [result.new_deployed_id]


def _half_done_promotion(api: EndpointApi, endpoint: str, model: str, run: str) -> str:
    """What a verify-traffic task killed after its deployModel leaves: the lease held by
    the dead task (for ``run``), the record in its canary state, the canary at 10 %."""
    from tune2serve.components.verify_traffic.record import CANARY, PromotionRecord, with_record
    from tune2serve.components.verify_traffic.traffic import NEW_MODEL_KEY, canary_split

    lease = lease_mod.acquire(api, endpoint, "dead-task", run=run, wait_s=0)
    state = api.get_endpoint(endpoint)
    previous = state.serving_split()
    record = PromotionRecord(CANARY, run, model.rsplit("/", 1)[1], "", previous)
    lease.update_labels(lambda labels: with_record(labels, record))
    resources = state.deployed_models[0].dedicated_resources()
    new_id = api.deploy_model(endpoint, {"model": model, "display_name": "canary", "dedicated_resources": resources},
                              canary_split(previous, NEW_MODEL_KEY, 10))
    lease.update_labels(lambda labels: with_record(labels, record.with_new(new_id)))
    return new_id  # and the task dies here: no release, no rollback


def test_finalize_after_a_failed_run_undoes_its_half_done_promotion(
        vertex_local: StackHandle, production: Deployment, staging: Deployment, tmp_path: Any) -> None:
    from google.cloud import aiplatform
    from kfp import dsl
    from kfp.dsl import Markdown

    from tune2serve.components.verify_traffic.finalize import RUN_LABEL, finalize
    from tune2serve.components.verify_traffic.finalize_component import finalize as finalize_component

    run = "run-20250101-x"
    api = api_for(vertex_local)
    [serving] = api.get_endpoint(production.endpoint).deployed_models
    # this run's deploy step: a staging endpoint and the Model, both labelled with the run
    aiplatform.Model(staging.model).update(labels={RUN_LABEL: run, "managed-by": "tune2serve"})
    mine = aiplatform.Endpoint.create(display_name="vt-run-staging", labels={RUN_LABEL: run})
    mine.deploy(model=aiplatform.Model(staging.model), machine_type="n1-standard-4", min_replica_count=1)
    canary = _half_done_promotion(api, production.endpoint, staging.model, run)
    assert api.get_endpoint(production.endpoint).serving_split() == {serving.id: 90, canary: 10}

    result = finalize(project=vertex_local.project, region=vertex_local.region,
                      production_endpoint=production.endpoint, run_id=run, pipeline_state="FAILED")
    assert result.problems == []
    assert result.actions == [f"{production.endpoint}: rolled back; serving {{'{serving.id}': 100}}",
                              f"removed the staging endpoint {mine.resource_name}",
                              f"deleted the model {staging.model}"]
    state = api.get_endpoint(production.endpoint)
    assert (state.serving_split(), state.deployed_ids()) == ({serving.id: 100}, [serving.id])
    assert read_record(state.labels).state == "rolled_back"
    assert lease_mod.HOLDER not in state.labels and lease_mod.RUN not in state.labels
    assert served_by(production) == {serving.id}
    assert aiplatform.Endpoint.list(filter=f'labels.{RUN_LABEL}="{run}"') == []

    # twice in a row is safe, here through the component as KFP calls it in the exit handler
    status = dsl.PipelineTaskFinalStatus(state="FAILED", pipeline_job_resource_name=f"projects/p/pipelineJobs/{run}",
                                         pipeline_task_name="verify-traffic", error_code=9, error_message="rolled back")
    report = Markdown(name="report", uri=str(tmp_path / "finalize.md"))
    answer = finalize_component.python_func(project=vertex_local.project, region=vertex_local.region,
                                            production_endpoint=production.endpoint, run_id=run, status=status,
                                            report=report)
    assert answer == "clean"
    assert "nothing to do; serving" in (tmp_path / "finalize.md").read_text()
    after_success = finalize(project=vertex_local.project, region=vertex_local.region,
                             production_endpoint=production.endpoint, run_id=run, pipeline_state="SUCCEEDED")
    assert (after_success.actions, after_success.problems) == ([], [])
    assert api.get_endpoint(production.endpoint).serving_split() == {serving.id: 100}
    assert served_by(production) == {serving.id}
