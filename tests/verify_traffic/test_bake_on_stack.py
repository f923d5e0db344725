"""The bake on the local stack, through the official Cloud Monitoring client (gRPC) and
the v3 REST path: the metrics count what the data plane served; a canary that passes
the probe but fails the production requests carrying a marker (``local fault http-503
--match``) is rolled back by the bake with the old split restored; a bake with no
traffic is inconclusive — rolled back, or held by request; a healthy canary under the
same load is promoted through the CLI. File order matters: the last test consumes the
staging endpoint."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tune2serve.components.verify_traffic.bake import INCONCLUSIVE, BakePolicy
from tune2serve.components.verify_traffic.canary import PromotionPlan, promote
from tune2serve.components.verify_traffic.checks import Policy
from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
from tune2serve.components.verify_traffic.probe import probe_request_body
from tune2serve.components.verify_traffic.record import read_record
from tune2serve.components.verify_traffic.rollback import rollback_endpoint
from tune2serve.components.verify_traffic.verify import real_probes
from tune2serve.components.vertex.clients import target

from tests.stack_fixtures import StackHandle
from tests.verify_traffic.conftest import Deployment
from tests.verify_traffic.load import Load
from tests.verify_traffic.test_on_stack import served_by

pytestmark = [pytest.mark.stack, pytest.mark.slow]
POLICY = Policy(latency_slack_ms=2000.0)  # a shared 2-core machine: latency is noise here
MARKER = "zq-marker-7"
# Production traffic: half of it carries the marker (long, unusual prompts, say).
BODIES = (probe_request_body(), probe_request_body(f"please translate {MARKER} into french"))
BAKE = BakePolicy(bake_s=4.0, min_requests=10, max_latency_ratio=20.0)  # latency: noise here too


def api_for(stack: StackHandle) -> EndpointApi:
    return EndpointApi(target(stack.project, stack.region))


def plan(prod: Deployment, staging: Deployment, bake: BakePolicy = BAKE) -> PromotionPlan:
    return PromotionPlan(endpoint=prod.endpoint, model=staging.model, steps=(50, 100), run_id="bake-test",
                         staging_endpoint=staging.endpoint, step_timeout_s=60, deploy_timeout_s=180,
                         lease_wait_s=0, drain_s=1.0, policy=POLICY, bake=bake)


@pytest.fixture
def cli(stack_env: StackHandle, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """``tune2serve ARGS`` in-process: (exit code, stdout); faults cleared afterwards."""
    from tune2serve.cli.main import main
    from tune2serve.localstack.faults import inject_fault

    def run(*args: str) -> tuple[int, str]:
        try:
            code = main(list(args))
        finally:  # the CLI bound the log handler to the captured stderr
            logging.getLogger("tune2serve").handlers.clear()
        return code, capsys.readouterr().out

    yield run
    inject_fault(stack_env.api_endpoint, "clear")


def test_the_official_client_reads_what_the_data_plane_served(stack_env: StackHandle, production: Deployment) -> None:
    import httpx
    from google.api_core import exceptions as gexc
    from tune2serve.components.vertex.monitoring import (
        RESPONSE_COUNT,
        metric_client,
        read_endpoint_series,
    )

    endpoint_id = production.endpoint.rsplit("/", 1)[1]
    start = time.time()
    time.sleep(1.0 - start % 1 + 0.01)  # start on a fresh 1-s sample
    start = time.time()
    assert served_by(production, n=12) == {production.deployed_model_id}
    time.sleep(1.0 - time.time() % 1 + 0.05)  # let the last sample close
    client = metric_client(target(stack_env.project, stack_env.region))
    read = read_endpoint_series(client, stack_env.project, endpoint_id, int(start), time.time())
    assert set(read) == {production.deployed_model_id}
    series = read[production.deployed_model_id]
    assert {c.code for c in series.counts} == {"200"} and sum(c.count for c in series.counts) == 12
    assert sum(p.count for p in series.latencies) == 12 == sum(sum(p.counts) for p in series.latencies)
    assert all(len(p.bounds) == len(p.counts) and 0 < p.mean_ms <= p.bounds[-1] for p in series.latencies)

    # the v3 REST path answers the same, in the API's JSON
    flt = f'metric.type="{RESPONSE_COUNT}" AND resource.labels.endpoint_id="{endpoint_id}"'
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    begin = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start - 1))
    answer = httpx.get(f"{stack_env.api_endpoint}/v3/projects/{stack_env.project}/timeSeries",
                       params={"filter": flt, "interval.startTime": begin, "interval.endTime": end}, timeout=30)
    assert answer.status_code == 200, answer.text
    [ts] = answer.json()["timeSeries"]
    assert ts["metric"]["labels"]["deployed_model_id"] == production.deployed_model_id
    assert ts["resource"] == {"type": "aiplatform.googleapis.com/Endpoint", "labels": {
        "resource_container": stack_env.project, "location": stack_env.region, "endpoint_id": endpoint_id}}
    assert ts["metricKind"] == "DELTA" and sum(int(p["value"]["int64Value"]) for p in ts["points"]) == 12

    # a wrong filter fails as it does in the cloud: INVALID_ARGUMENT through the client
    with pytest.raises(gexc.InvalidArgument, match="not a label of"):
        list(client.list_time_series(request={
            "name": f"projects/{stack_env.project}", "filter": f'{flt} AND metric.labels.model_id="x"',
            "interval": {"start_time": {"seconds": int(start)}, "end_time": {"seconds": int(time.time())}}}))
    bad = httpx.get(f"{stack_env.api_endpoint}/v3/projects/{stack_env.project}/timeSeries",
                    params={"filter": flt, "interval.endTime": end, "interval.stratTime": begin}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_a_canary_failing_only_marked_traffic_passes_the_probe_and_is_rolled_back_by_the_bake(
        stack_env: StackHandle, production: Deployment, staging: Deployment, cli: Any) -> None:
    api = api_for(stack_env)
    code, _ = cli("local", "fault", "http-503", "--home", str(stack_env.home), "--target", staging.model,
                  "--match", MARKER, "--count", "100000")
    assert code == 0
    probe_for, client = real_probes(api)
    try:
        with Load(production.dns, production.endpoint, clients=6, bodies=BODIES) as load:
            outcome = promote(api, plan(production, staging), probe_for)
    finally:
        client.close()
    assert outcome.outcome == "rolled_back", outcome.reason
    [step] = outcome.steps
    assert step.test.k > 0 and step.canary.errors == 0  # the probe saw a healthy canary
    bake = step.bake
    assert bake.verdict == "failed" and bake.canary.requests >= BAKE.min_requests
    assert bake.canary.errors > 0 and bake.baseline.errors == 0
    assert any("error rate" in f for f in bake.failures) and "bake:" in outcome.reason
    state = api.get_endpoint(production.endpoint)
    assert state.serving_split() == {production.deployed_model_id: 100}
    assert state.deployed_ids() == [production.deployed_model_id]
    assert read_record(state.labels).state == "rolled_back"
    # what users saw: failures only from the canary, at most its share of the load
    assert load.failed and all(f.startswith(f"503 {outcome.new_deployed_id} ") for f in load.failed)
    assert len(load.failed) <= 0.5 * load.total, (len(load.failed), load.total)
    assert served_by(production) == {production.deployed_model_id}


@pytest.mark.parametrize("hold", [False, True])
def test_a_bake_without_traffic_is_inconclusive(stack_env: StackHandle, production: Deployment,
                                                staging: Deployment, hold: bool) -> None:
    api = api_for(stack_env)
    bake = BakePolicy(bake_s=3.0, min_requests=10, on_inconclusive="hold" if hold else "rollback")
    probe_for, client = real_probes(api)
    try:
        outcome = promote(api, plan(production, staging, bake), probe_for)
    finally:
        client.close()
    [step] = outcome.steps
    assert step.bake.verdict == INCONCLUSIVE and step.bake.canary.requests == 0
    assert "inconclusive" in outcome.reason
    state = api.get_endpoint(production.endpoint)
    if not hold:
        assert outcome.outcome == "rolled_back"
        assert state.serving_split() == {production.deployed_model_id: 100}
        return
    assert outcome.outcome == "failed" and outcome.rollback is None
    assert state.serving_split() == {production.deployed_model_id: 50, outcome.new_deployed_id: 50}
    assert read_record(state.labels).state == "canary"
    assert any("--rollback" in n for n in outcome.notes)
    done = rollback_endpoint(api, production.endpoint)  # what the note asks an operator to do
    assert done.action == "rolled_back" and done.restored_split == {production.deployed_model_id: 100}
    assert served_by(production) == {production.deployed_model_id}


def test_a_healthy_canary_under_the_same_load_is_promoted_after_its_bake(
        stack_env: StackHandle, production: Deployment, staging: Deployment, cli: Any, tmp_path: Any) -> None:
    with Load(production.dns, production.endpoint, clients=6, bodies=BODIES) as load:
        code, out = cli("verify-traffic", production.endpoint, "--project", stack_env.project, "--region",
                        stack_env.region, "--model", staging.model, "--staging-endpoint", staging.endpoint,
                        "--steps", "50,100", "--bake-s", "4", "--min-bake-requests", "10", "--max-latency-ratio",
                        "20", "--json", "--report-dir", str(tmp_path))
    result = json.loads(out)
    assert (code, result["outcome"]) == (0, "promoted"), result["evidence"]["reason"]
    assert load.failed == [] and load.ok > 0
    first, last = result["evidence"]["steps"]
    assert first["bake"]["verdict"] == "passed" and last["bake"] is None  # no bake at 100 %
    assert first["bake"]["canary"]["requests"] >= 10 and first["bake"]["canary"]["errors"] == 0
    new_id = result["evidence"]["new_deployed_id"]
    assert set(first["bake"]["series"]) == {production.deployed_model_id, new_id}
    assert result["traffic_split"] == {new_id: 100}
    page = (tmp_path / "verify_traffic.html").read_text()
    assert 'id="bake-1" data-verdict="passed"' in page and '<svg id="bake-chart-1"' in page
    assert served_by(production) == {new_id}
