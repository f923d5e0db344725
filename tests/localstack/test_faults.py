"""Injected faults: failed deploys, dead replicas, 503/429 answers, slow answers."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.localstack.conftest import Deployed
from tests.stack_fixtures import StackHandle
from tune2serve.localstack.faults import inject_fault


def _chat(stack: StackHandle, deployed: Deployed) -> requests.Response:
    dns = requests.get(f"{stack.api_endpoint}/v1/{deployed.endpoint}", timeout=10).json()["dedicatedEndpointDns"]
    return requests.post(f"https://{dns}/v1beta1/{deployed.endpoint}/chat/completions", timeout=30,
                         verify=stack.env["REQUESTS_CA_BUNDLE"],
                         json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})


def test_http_503_for_the_next_n_requests(stack_env: StackHandle, deployed: Deployed) -> None:
    inject_fault(stack_env.api_endpoint, "http-503", target=deployed.deployed_model_id, count=2)
    first, second, third = (_chat(stack_env, deployed) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.json()["error"]["status"] == "UNAVAILABLE"
    assert first.headers["X-Vertex-AI-Deployed-Model-Id"] == deployed.deployed_model_id


def test_http_429_through_the_cli_targets_a_model_name(stack_env: StackHandle, deployed: Deployed,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tune2serve.cli.main import main

    assert main(["local", "fault", "http-429", "--home", str(stack_env.home), "--target", deployed.model]) == 0
    assert json.loads(capsys.readouterr().out)["faults"][0]["kind"] == "http-429"
    r = _chat(stack_env, deployed)
    assert (r.status_code, r.json()["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert _chat(stack_env, deployed).status_code == 200


def test_latency_fault_delays_answers(stack_env: StackHandle, deployed: Deployed) -> None:
    inject_fault(stack_env.api_endpoint, "latency", target=deployed.deployed_model_id, ms=400, count=1)
    start = time.monotonic()
    assert _chat(stack_env, deployed).status_code == 200
    assert time.monotonic() - start >= 0.4


def test_deploy_fails_fault_fails_the_operation_and_makes_nothing(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.api_core import exceptions
    from google.cloud import aiplatform
    from vertexai.preview import model_garden

    endpoints_before = {e.resource_name for e in aiplatform.Endpoint.list()}
    models_before = {m.resource_name for m in aiplatform.Model.list()}
    inject_fault(vertex_local.api_endpoint, "deploy-fails")
    with pytest.raises(exceptions.GoogleAPICallError, match="injected fault deploy-fails"):
        model_garden.CustomModel(gcs_uri=deployed.gcs_uri).deploy(endpoint_display_name="doomed")
    assert {e.resource_name for e in aiplatform.Endpoint.list()} == endpoints_before
    assert {m.resource_name for m in aiplatform.Model.list()} == models_before


def test_killed_replica_shows_in_health_and_up_restarts_it(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.cloud import aiplatform

    from tune2serve.localstack import procs
    from tune2serve.localstack.stack import LocalStack

    killed = inject_fault(vertex_local.api_endpoint, "kill-replica", target=deployed.deployed_model_id)["killed"]
    assert killed["deployedModelId"] == deployed.deployed_model_id
    assert procs.start_time(killed["pid"]) is None

    def available() -> int:
        ep = aiplatform.Endpoint(deployed.endpoint)
        return ep.gca_resource.deployed_models[0].status.available_replica_count

    assert available() == 0
    r = _chat(vertex_local, deployed)
    assert (r.status_code, r.json()["error"]["status"]) == (503, "UNAVAILABLE")

    LocalStack(vertex_local.home).up()  # idempotent: restarts the missing replica
    assert available() == 1
    assert _chat(vertex_local, deployed).status_code == 200
