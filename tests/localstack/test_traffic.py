"""deployModel/undeployModel/traffic split through the SDK, and routing by the split:
every answer names the deployed model that served it."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import requests

from tests.localstack.conftest import Deployed
from tests.stack_fixtures import StackHandle


def _served_by(ep_dns: str, endpoint: str, ca: str, n: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    with requests.Session() as s:
        for _ in range(n):
            r = s.post(f"https://{ep_dns}/v1beta1/{endpoint}/chat/completions", timeout=30, verify=ca,
                       json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
            assert r.status_code == 200, r.text
            assert r.json()["deployedModelId"] == r.headers["X-Vertex-AI-Deployed-Model-Id"]
            counts[r.headers["X-Vertex-AI-Deployed-Model-Id"]] += 1
    return counts


def test_canary_deploy_split_routing_and_rollback(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.cloud import aiplatform

    ep = aiplatform.Endpoint(deployed.endpoint)
    ep.deploy(aiplatform.Model(deployed.model), deployed_model_display_name="canary", traffic_percentage=30,
              min_replica_count=1, max_replica_count=1)
    ep = aiplatform.Endpoint(deployed.endpoint)
    canary = next(dm.id for dm in ep.gca_resource.deployed_models if dm.display_name == "canary")
    assert ep.traffic_split == {deployed.deployed_model_id: 70, canary: 30}
    assert all(dm.status.available_replica_count == 1 for dm in ep.gca_resource.deployed_models)

    counts = _served_by(ep.dedicated_endpoint_dns, deployed.endpoint, vertex_local.env["REQUESTS_CA_BUNDLE"], 80)
    assert set(counts) == {deployed.deployed_model_id, canary}
    # Binomial(80, 0.3): mean 24, sd 4.1; [8, 40] is beyond 3.8 sd either way.
    assert 8 <= counts[canary] <= 40, counts

    # Vertex refuses to undeploy a model that still receives traffic; nothing changes.
    r = requests.post(f"{vertex_local.api_endpoint}/v1/{deployed.endpoint}:undeployModel",
                      json={"deployedModelId": canary}, timeout=10)
    assert (r.status_code, r.json()["error"]["status"]) == (400, "FAILED_PRECONDITION")
    assert aiplatform.Endpoint(deployed.endpoint).traffic_split == {deployed.deployed_model_id: 70, canary: 30}

    ep.update(traffic_split={deployed.deployed_model_id: 100, canary: 0})
    assert aiplatform.Endpoint(deployed.endpoint).traffic_split == {deployed.deployed_model_id: 100}
    assert _served_by(ep.dedicated_endpoint_dns, deployed.endpoint,
                      vertex_local.env["REQUESTS_CA_BUNDLE"], 5) == Counter({deployed.deployed_model_id: 5})

    replica_files = list((vertex_local.home / "run" / "replicas").glob(f"{canary}-*.json"))
    assert replica_files
    ep.undeploy(canary)
    ep = aiplatform.Endpoint(deployed.endpoint)
    assert [dm.id for dm in ep.gca_resource.deployed_models] == [deployed.deployed_model_id]
    assert ep.traffic_split == {deployed.deployed_model_id: 100}
    assert not any(f.exists() for f in replica_files)
    model = aiplatform.Model(deployed.model)
    assert [d.deployed_model_id for d in model.gca_resource.deployed_models] == [deployed.deployed_model_id]


def test_endpoint_create_and_delete_and_model_delete_rules(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.api_core import exceptions
    from google.cloud import aiplatform

    ep = aiplatform.Endpoint.create(display_name="empty-endpoint", labels={"t": "create"})
    assert ep.resource_name.rsplit("/", 1)[1].isdigit()
    assert aiplatform.Endpoint.list(filter='labels.t="create"')[0].resource_name == ep.resource_name
    ep.delete()
    assert aiplatform.Endpoint.list(filter='labels.t="create"') == []
    # FAILED_PRECONDITION travels as HTTP 400, which api_core raises as BadRequest.
    with pytest.raises(exceptions.BadRequest, match="is deployed on .*; undeploy it first"):
        aiplatform.Model(deployed.model).delete()
    assert os.path.isdir(vertex_local.home / "models" / deployed.model.rsplit("/", 1)[1])


def _endpoint(endpoint_id: str) -> dict:
    return {"name": f"projects/p/locations/us-central1/endpoints/{endpoint_id}", "trafficSplit": {"1": 90, "2": 10},
            "deployedModels": [{"id": "1", "model": "m/1"}, {"id": "2", "model": "m/2"}]}


def test_routing_is_weighted_random_and_repeatable_per_endpoint_with_a_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the seed, an endpoint's routing is the same whatever other endpoints are sent
    (the suite's canaries are not failed by routing luck in one run and not the next);
    without it, two data planes route differently. Either way the split's weights hold."""
    from tune2serve.localstack.dataplane import DataPlane
    from tune2serve.localstack.faults import FaultBook

    monkeypatch.setenv("TUNE2SERVE_LOCAL_ROUTING_SEED", "7")
    alone, busy = DataPlane(None, None, FaultBook()), DataPlane(None, None, FaultBook())  # type: ignore[arg-type]
    routed = [alone.choose(_endpoint("100")) for _ in range(2000)]
    interleaved = []
    for _ in range(2000):
        busy.choose(_endpoint("200"))
        interleaved.append(busy.choose(_endpoint("100")))
    assert routed == interleaved
    assert 150 <= routed.count("2") <= 250  # 10 % of 2000, binomial sd 13.4
    assert [alone.choose(_endpoint("300")) for _ in range(200)] != routed[:200]  # its own stream

    monkeypatch.delenv("TUNE2SERVE_LOCAL_ROUTING_SEED")
    one, two = DataPlane(None, None, FaultBook()), DataPlane(None, None, FaultBook())  # type: ignore[arg-type]
    assert [one.choose(_endpoint("100")) for _ in range(200)] != [two.choose(_endpoint("100")) for _ in range(200)]
