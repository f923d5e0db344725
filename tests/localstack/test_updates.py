"""Writes through the SDK that the local stack must treat as Vertex does: deployModel of a
CPU-only machine spec, etag compare-and-swap on endpoint PATCH, Model.update(labels=...),
and the faults the promotion tests need (routing-skew, undeploy-fails, control-429)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.localstack.conftest import Deployed
from tests.stack_fixtures import StackHandle
from tune2serve.localstack.faults import inject_fault


def _served_by(stack: StackHandle, endpoint: str, n: int) -> Counter[str]:
    dns = requests.get(f"{stack.api_endpoint}/v1/{endpoint}", timeout=10).json()["dedicatedEndpointDns"]
    counts: Counter[str] = Counter()
    with requests.Session() as s:
        for _ in range(n):
            r = s.post(f"https://{dns}/v1beta1/{endpoint}/chat/completions", timeout=30,
                       verify=stack.env["REQUESTS_CA_BUNDLE"],
                       json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
            assert r.status_code == 200, r.text
            counts[r.headers["X-Vertex-AI-Deployed-Model-Id"]] += 1
    return counts


@pytest.fixture(scope="module")
def second(local_stack: StackHandle, deployed: Deployed) -> Iterator[str]:
    """A second deployed model on the shared endpoint at 10 %, deployed with an explicit
    CPU machine type (the regression case: it used to be refused with 400); removed after."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in local_stack.env.items():
            mp.setenv(k, v)
        local_stack.vertex_init()
        from google.cloud import aiplatform

        ep = aiplatform.Endpoint(deployed.endpoint)
        ep.deploy(model=aiplatform.Model(deployed.model), deployed_model_display_name="second",
                  traffic_percentage=10, machine_type="n1-standard-4", min_replica_count=1)
        ep = aiplatform.Endpoint(deployed.endpoint)
        dm_id = next(dm.id for dm in ep.gca_resource.deployed_models if dm.display_name == "second")
        try:
            yield dm_id
        finally:
            inject_fault(local_stack.api_endpoint, "clear")
            ep = aiplatform.Endpoint(deployed.endpoint)
            if dm_id in ep.traffic_split:
                ep.update(traffic_split={deployed.deployed_model_id: 100})
                ep.undeploy(dm_id)
            assert aiplatform.Endpoint(deployed.endpoint).traffic_split == {deployed.deployed_model_id: 100}


def test_deploy_model_with_a_cpu_machine_type_next_to_a_serving_model(vertex_local: StackHandle, deployed: Deployed,
                                                                      second: str) -> None:
    from google.cloud import aiplatform

    ep = aiplatform.Endpoint(deployed.endpoint)
    assert ep.traffic_split == {deployed.deployed_model_id: 90, second: 10}
    [dm] = [d for d in ep.gca_resource.deployed_models if d.id == second]
    assert dm.dedicated_resources.machine_spec.machine_type == "n1-standard-4"
    assert dm.dedicated_resources.machine_spec.accelerator_count == 0
    assert dm.status.available_replica_count == 1


@pytest.mark.parametrize("percent", [0, 30])
def test_routing_skew_overrides_the_split(stack_env: StackHandle, deployed: Deployed, second: str,
                                          percent: int) -> None:
    inject_fault(stack_env.api_endpoint, "routing-skew", target=second, percent=percent)
    try:
        counts = _served_by(stack_env, deployed.endpoint, 100)
    finally:
        inject_fault(stack_env.api_endpoint, "clear")
    assert set(counts) <= {deployed.deployed_model_id, second}
    if percent == 0:
        assert counts[second] == 0, counts
    else:  # Binomial(100, 0.3): mean 30, sd 4.6; [14, 48] is beyond 3.5 sd either way
        assert 14 <= counts[second] <= 48, counts
    assert requests.get(f"{stack_env.api_endpoint}/v1/{deployed.endpoint}", timeout=10).json()["trafficSplit"] == {
        deployed.deployed_model_id: 90, second: 10}  # the configured split is untouched


def test_undeploy_fails_fault_fails_the_operation_and_keeps_the_model(vertex_local: StackHandle,
                                                                      deployed: Deployed, second: str) -> None:
    from google.api_core import exceptions
    from google.cloud import aiplatform

    ep = aiplatform.Endpoint(deployed.endpoint)
    ep.update(traffic_split={deployed.deployed_model_id: 100})
    inject_fault(vertex_local.api_endpoint, "undeploy-fails", target=second)
    with pytest.raises(exceptions.GoogleAPICallError, match="injected fault undeploy-fails"):
        aiplatform.Endpoint(deployed.endpoint).undeploy(second)
    ep = aiplatform.Endpoint(deployed.endpoint)
    assert sorted(d.id for d in ep.gca_resource.deployed_models) == sorted([deployed.deployed_model_id, second])
    assert [d.status.available_replica_count for d in ep.gca_resource.deployed_models] == [1, 1]
    assert vertex_local.home.joinpath("run", "replicas", f"{second}-0.json").exists()
    assert _served_by(vertex_local, deployed.endpoint, 5) == Counter({deployed.deployed_model_id: 5})
    ep.update(traffic_split={deployed.deployed_model_id: 90, second: 10})  # as the fixture left it


def test_endpoint_patch_honours_the_etag(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.api_core import exceptions
    from google.cloud import aiplatform

    url = f"{vertex_local.api_endpoint}/v1/{deployed.endpoint}?updateMask=labels"
    before = requests.get(f"{vertex_local.api_endpoint}/v1/{deployed.endpoint}", timeout=10).json()
    stale = aiplatform.Endpoint(deployed.endpoint)
    assert stale.gca_resource.etag == before["etag"]  # the SDK reads lazily: make it read now
    ok = requests.patch(url, json={"labels": {**before["labels"], "cas": "one"}, "etag": before["etag"]}, timeout=10)
    assert ok.status_code == 200, ok.text
    assert ok.json()["etag"] != before["etag"]
    refused = requests.patch(url, json={"labels": {"cas": "two"}, "etag": before["etag"]}, timeout=10)
    assert refused.status_code == 409
    assert refused.json()["error"]["status"] == "ABORTED"
    assert "does not match the current etag" in refused.json()["error"]["message"]
    with pytest.raises(exceptions.Conflict, match="etag"):
        stale.update(labels={"cas": "three"})
    now = aiplatform.Endpoint(deployed.endpoint)
    assert now.labels["cas"] == "one"  # neither refused write changed anything
    blind = requests.patch(url, json={"labels": before["labels"]}, timeout=10)  # no etag: overwrite
    assert blind.status_code == 200 and blind.json()["labels"] == before["labels"]


def test_model_update_labels_through_the_sdk(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.api_core import exceptions
    from google.cloud import aiplatform

    model = aiplatform.Model(deployed.model)
    original = dict(model.labels)
    stale = aiplatform.Model(deployed.model)
    assert stale.gca_resource.etag
    model.update(labels={**original, "stage": "canary"})
    assert aiplatform.Model(deployed.model).labels == {**original, "stage": "canary"}
    with pytest.raises(exceptions.Conflict):
        stale.update(labels={"stage": "stale"})
    with pytest.raises(exceptions.BadRequest, match="Label value 'Not Valid'"):
        aiplatform.Model(deployed.model).update(labels={"stage": "Not Valid"})
    bad_mask = requests.patch(f"{vertex_local.api_endpoint}/v1/{deployed.model}?updateMask=artifact_uri",
                              json={"artifactUri": "gs://elsewhere"}, timeout=10)
    assert bad_mask.status_code == 400 and "artifact_uri" in bad_mask.json()["error"]["message"]
    unknown = requests.patch(f"{vertex_local.api_endpoint}/v1/{deployed.model}?updateMask=labels",
                             json={"labelz": {}}, timeout=10)
    assert unknown.status_code == 400 and "labelz" in unknown.json()["error"]["message"]
    aiplatform.Model(deployed.model).update(labels=original or {"suite": "local"})
    assert aiplatform.Model(deployed.model).uri == deployed.gcs_uri


def test_control_429_answers_quota_exceeded_then_recovers(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.api_core import exceptions
    from google.cloud import aiplatform
    from vertexai.preview import model_garden

    inject_fault(vertex_local.api_endpoint, "control-429", count=2)
    url = f"{vertex_local.api_endpoint}/v1/{deployed.endpoint}"
    codes = [requests.get(url, timeout=10) for _ in range(3)]
    assert [r.status_code for r in codes] == [429, 429, 200]
    error: dict[str, Any] = codes[0].json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["message"].startswith("Quota exceeded for aiplatform.googleapis.com/custom_model_serving_")

    endpoints_before = {e.resource_name for e in aiplatform.Endpoint.list()}
    inject_fault(vertex_local.api_endpoint, "control-429", target=":deploy")
    with pytest.raises(exceptions.TooManyRequests, match="Quota exceeded"):
        model_garden.CustomModel(gcs_uri=deployed.gcs_uri).deploy(endpoint_display_name="no-quota")
    assert {e.resource_name for e in aiplatform.Endpoint.list()} == endpoints_before
    assert requests.get(url, timeout=10).status_code == 200


def test_fault_help_documents_every_kind(capsys: pytest.CaptureFixture[str]) -> None:
    from tune2serve.cli.main import main
    from tune2serve.localstack.faults import KINDS

    with pytest.raises(SystemExit) as e:
        main(["local", "fault", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for kind in KINDS:
        assert f"\n  {kind} " in out, kind
    assert main(["local", "fault", "routing-skew", "--home", "/nonexistent", "--percent", "30"]) == 2
    assert "routing-skew needs --target" in capsys.readouterr().err
