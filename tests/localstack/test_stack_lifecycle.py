"""`local up/down/status/env`: idempotent up, nothing left running after down, and state
(endpoints, ports, CA) surviving a restart."""

from __future__ import annotations

import json

import pytest
import requests

from tests.localstack.conftest import Deployed
from tests.stack_fixtures import StackHandle
from tune2serve.cli.main import main
from tune2serve.localstack import procs
from tune2serve.localstack.stack import LocalStack


def test_env_prints_the_six_exports(local_stack: StackHandle, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "env", "--home", str(local_stack.home)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"export {k}={v}" for k, v in local_stack.env.items()]
    assert [line.split("=")[0] for line in lines] == [
        "export STORAGE_EMULATOR_HOST", "export TUNE2SERVE_VERTEX_API_ENDPOINT",
        "export REQUESTS_CA_BUNDLE", "export SSL_CERT_FILE", "export CURL_CA_BUNDLE",
        "export TUNE2SERVE_MONITORING_API_ENDPOINT"]
    assert local_stack.env["CURL_CA_BUNDLE"] == local_stack.env["REQUESTS_CA_BUNDLE"]  # curl trusts the local CA


def test_status_json_lists_endpoints_splits_and_replicas(local_stack: StackHandle, deployed: Deployed,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "status", "--json", "--home", str(local_stack.home)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] == {"gcs": True, "vertex": True}
    [ep] = [e for e in status["endpoints"] if e["name"] == deployed.endpoint]
    assert ep["trafficSplit"] == {deployed.deployed_model_id: 100}
    [dm] = ep["deployedModels"]
    assert dm["status"]["availableReplicaCount"] == 1 and dm["wantedReplicas"] == 1
    assert [r["healthy"] for r in dm["replicas"]] == [True]


def test_up_is_idempotent(local_stack: StackHandle) -> None:
    stack = LocalStack(local_stack.home)
    pids = sorted(stack.pids())
    assert stack.up()["started"] == []
    assert sorted(stack.pids()) == pids


def test_down_stops_everything_and_up_restores_endpoints(local_stack: StackHandle, deployed: Deployed) -> None:
    stack = LocalStack(local_stack.home)
    records = [procs.read_pidfile(p) for p in (local_stack.home / "run").rglob("*.json")]
    assert len(records) >= 3  # gcs, vertex, at least one model server
    stack.down()
    assert not any(r.alive() for r in records if r is not None)
    assert stack.pids() == []

    assert sorted(stack.up()["started"]) == ["gcs", "vertex"]
    assert stack.env() == local_stack.env  # same ports, same CA
    ep = requests.get(f"{local_stack.api_endpoint}/v1/{deployed.endpoint}", timeout=10).json()
    assert ep["trafficSplit"] == {deployed.deployed_model_id: 100}
    assert ep["deployedModels"][0]["status"]["availableReplicaCount"] == 1
    r = requests.post(f"https://{ep['dedicatedEndpointDns']}/v1/{deployed.endpoint}:predict", timeout=30,
                      verify=local_stack.env["REQUESTS_CA_BUNDLE"],
                      json={"instances": [{"prompt": "hello", "max_tokens": 2}]})
    assert r.status_code == 200 and r.json()["deployedModelId"] == deployed.deployed_model_id
