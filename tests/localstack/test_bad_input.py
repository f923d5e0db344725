"""Bad requests get Vertex's status and error body, and change no state."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.localstack.conftest import Deployed
from tests.stack_fixtures import StackHandle


def _state(stack: StackHandle) -> dict[str, Any]:
    raw = json.loads((stack.home / "state.json").read_text())
    return {k: raw[k] for k in ("endpoints", "models", "deployments")}


def _post(stack: StackHandle, path: str, body: Any, raw: bytes | None = None) -> requests.Response:
    url = f"{stack.api_endpoint}/{path}?$alt=json;enum-encoding=int"
    if raw is not None:
        return requests.post(url, data=raw, headers={"Content-Type": "application/json"}, timeout=30)
    return requests.post(url, json=body, timeout=30)


CASES = {
    "malformed JSON": ("deploy", None, b'{"customModel": {"gcsUri": '),
    "unknown field": ("deploy", {"customModel": {"gcsUri": "gs://x/y"}, "bogusField": 1}, None),
    "wrong type": ("deploy", {"customModel": {"gcsUri": 5}}, None),
    "missing gcs folder": ("deploy", {"customModel": {"gcsUri": "gs://tune2serve-local/nothing-here"}}, None),
    "not gs://": ("deploy", {"customModel": {"gcsUri": "/tmp/model"}}, None),
    "too many replicas": ("deploy", {"customModel": {"gcsUri": "{uri}"},
                                     "deployConfig": {"dedicatedResources": {"minReplicaCount": 9}}}, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_deploy_requests_are_400_and_change_nothing(stack_env: StackHandle, deployed: Deployed, case: str) -> None:
    _, body, raw = CASES[case]
    if body is not None:
        body = json.loads(json.dumps(body).replace("{uri}", deployed.gcs_uri))
    before = _state(stack_env)
    r = _post(stack_env, "v1beta1/projects/local-project/locations/us-central1:deploy", body, raw)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT" and error["message"]
    assert _state(stack_env) == before


def test_unknown_field_message_names_the_field(stack_env: StackHandle) -> None:
    r = _post(stack_env, "v1beta1/projects/local-project/locations/us-central1:deploy",
              {"customModel": {"gcsUri": "gs://x/y"}, "bogusField": 1})
    assert "bogusField" in r.json()["error"]["message"]


def test_folder_missing_required_files_is_refused(stack_env: StackHandle, tiny_llama: Any) -> None:
    import shutil

    broken = tiny_llama.parent / "no-tokenizer"
    shutil.copytree(tiny_llama, broken, dirs_exist_ok=True)
    (broken / "tokenizer.json").unlink()
    uri = stack_env.upload(broken, "models/no-tokenizer")
    before = _state(stack_env)
    r = _post(stack_env, "v1beta1/projects/local-project/locations/us-central1:deploy", {"customModel": {"gcsUri": uri}})
    assert r.status_code == 400
    assert "missing tokenizer (tokenizer.json or tokenizer.model)" in r.json()["error"]["message"]
    assert _state(stack_env) == before


def test_deploy_model_of_a_missing_model_is_404(stack_env: StackHandle, deployed: Deployed) -> None:
    before = _state(stack_env)
    missing = deployed.model.rsplit("/", 1)[0] + "/12345"
    r = _post(stack_env, f"v1/{deployed.endpoint}:deployModel",
              {"deployedModel": {"model": missing, "dedicatedResources": {"minReplicaCount": 1}}})
    assert (r.status_code, r.json()["error"]["status"]) == (404, "NOT_FOUND")
    assert missing in r.json()["error"]["message"]
    assert _state(stack_env) == before


@pytest.mark.parametrize("split", [{"0": 50}, {"0": 60, "{dm}": 60}, {"0": 50, "999": 50}])
def test_deploy_model_with_a_bad_split_is_400(stack_env: StackHandle, deployed: Deployed, split: dict[str, int]) -> None:
    split = {k.replace("{dm}", deployed.deployed_model_id): v for k, v in split.items()}
    before = _state(stack_env)
    r = _post(stack_env, f"v1/{deployed.endpoint}:deployModel",
              {"deployedModel": {"model": deployed.model}, "trafficSplit": split})
    assert (r.status_code, r.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert _state(stack_env) == before


def test_traffic_patch_not_summing_to_100_is_400(stack_env: StackHandle, deployed: Deployed) -> None:
    before = _state(stack_env)
    r = requests.patch(f"{stack_env.api_endpoint}/v1/{deployed.endpoint}?updateMask=traffic_split",
                       json={"trafficSplit": {deployed.deployed_model_id: 90}}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        f"Sum of all traffic split percentages must be 100; got 90 in {{'{deployed.deployed_model_id}': 90}}.")
    assert _state(stack_env) == before


@pytest.mark.parametrize("method,path", [
    ("GET", "v1/projects/local-project/locations/us-central1/endpoints/404404"),
    ("GET", "v1/projects/local-project/locations/us-central1/models/404404"),
    ("DELETE", "v1/projects/local-project/locations/us-central1/endpoints/404404"),
    ("GET", "v1beta1/projects/local-project/locations/us-central1/operations/404404"),
    ("POST", "v1/projects/local-project/locations/us-central1/endpoints/404404:predict"),
])
def test_missing_ids_are_404(stack_env: StackHandle, method: str, path: str) -> None:
    r = requests.request(method, f"{stack_env.api_endpoint}/{path}", json={"instances": [{"prompt": "x"}]}, timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["status"] == "NOT_FOUND"


def test_sdk_raises_the_cloud_exception_classes(vertex_local: StackHandle) -> None:
    from google.api_core import exceptions
    from google.cloud import aiplatform
    from vertexai.preview import model_garden

    with pytest.raises(exceptions.NotFound):
        aiplatform.Model("404404")
    with pytest.raises(exceptions.BadRequest, match="No model files found"):
        model_garden.CustomModel(gcs_uri=f"gs://{vertex_local.bucket}/absent").deploy()
