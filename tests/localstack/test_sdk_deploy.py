"""Model Garden :deploy, the endpoint it makes, and the four request kinds, all through
the official clients (aiplatform/vertexai, google-cloud-storage, openai)."""

from __future__ import annotations

import json
import ssl

import pytest
import requests

from tests.localstack.conftest import Deployed
from tests.stack_fixtures import StackHandle


def test_deploy_makes_a_dedicated_endpoint_serving_100_percent(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.cloud import aiplatform

    ep = aiplatform.Endpoint(deployed.endpoint)
    assert ep.display_name == "tests-shared"
    assert ep.dedicated_endpoint_enabled is True
    port = int(vertex_local.env["TUNE2SERVE_VERTEX_API_ENDPOINT"].rsplit(":", 1)[1])
    assert ep.dedicated_endpoint_dns.startswith("127.0.0.1:") and not ep.dedicated_endpoint_dns.endswith(f":{port}")
    assert ep.traffic_split == {deployed.deployed_model_id: 100}
    [dm] = ep.gca_resource.deployed_models
    assert dm.status.available_replica_count == 1
    assert dm.dedicated_resources.min_replica_count == 1
    assert ep.labels == {"suite": "local"}


def test_deploy_registers_a_model_with_the_gcs_uri(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.cloud import aiplatform

    model = aiplatform.Model(deployed.model)
    assert model.display_name == "tiny-llama"
    assert model.uri == deployed.gcs_uri
    assert model.resource_name.rsplit("/", 1)[1].isdigit()
    names = [m.resource_name for m in aiplatform.Model.list()]
    assert deployed.model in names


def test_predict_through_the_sdk_on_the_dedicated_endpoint(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.cloud import aiplatform

    ep = aiplatform.Endpoint(deployed.endpoint)
    instance = {"prompt": "the capital of france is", "max_tokens": 6, "temperature": 0, "top_p": 1,
                "ignore_eos": True}
    first = ep.predict(instances=[instance], use_dedicated_endpoint=True)
    again = ep.predict(instances=[instance, {**instance, "raw_response": True}], use_dedicated_endpoint=True)
    assert first.deployed_model_id == deployed.deployed_model_id
    assert first.model_resource_name == deployed.model
    assert first.predictions[0].startswith("Prompt:\nthe capital of france is\nOutput:\n")
    assert again.predictions[0] == first.predictions[0]  # temperature 0 is deterministic
    assert first.predictions[0].endswith(again.predictions[1])


def test_stream_raw_predict_passes_server_sent_events(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.cloud import aiplatform

    ep = aiplatform.Endpoint(deployed.endpoint)
    body = json.dumps({"instances": [{"prompt": "hello world", "max_tokens": 4, "temperature": 0,
                                      "stream": True}]}).encode()
    lines = list(ep.stream_raw_predict(body=body, headers={"Content-Type": "application/json"},
                                       use_dedicated_endpoint=True))
    events = [json.loads(line[len(b"data: "):]) for line in lines if line.startswith(b"data: ")]
    assert len(events) >= 2
    assert {e["object"] for e in events} == {"text_completion"}
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_openai_client_chat_completions_unary_and_streaming(vertex_local: StackHandle, deployed: Deployed) -> None:
    import httpx
    import openai
    from google.cloud import aiplatform

    dns = aiplatform.Endpoint(deployed.endpoint).dedicated_endpoint_dns
    client = openai.OpenAI(base_url=f"https://{dns}/v1beta1/{deployed.endpoint}", api_key="unused-locally",
                           http_client=httpx.Client(verify=ssl.create_default_context(cafile=vertex_local.env["SSL_CERT_FILE"])))
    messages = [{"role": "user", "content": "what is the capital of france"}]
    raw = client.chat.completions.with_raw_response.create(
        model=deployed.model, messages=messages, max_tokens=5, temperature=0, top_p=1,
        extra_body={"ignore_eos": True})
    unary = raw.parse()
    assert raw.headers["x-vertex-ai-deployed-model-id"] == deployed.deployed_model_id
    assert unary.choices[0].message.role == "assistant"
    assert unary.usage.completion_tokens == 5
    stream = client.chat.completions.create(model=deployed.model, messages=messages, max_tokens=5,
                                            temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    # transformers serve's streamer holds back a trailing partial UTF-8 character that the
    # unary answer decodes with a replacement character, so compare up to that.
    assert text and unary.choices[0].message.content.startswith(text.rstrip("\ufffd"))


def test_endpoint_list_filters_on_display_name_and_labels(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.cloud import aiplatform

    by_name = aiplatform.Endpoint.list(filter='display_name="tests-shared"')
    by_label = aiplatform.Endpoint.list(filter='labels.suite="local"')
    none = aiplatform.Endpoint.list(filter='display_name="no-such-endpoint"')
    assert [e.resource_name for e in by_name] == [deployed.endpoint]
    assert deployed.endpoint in [e.resource_name for e in by_label]
    assert none == []


def test_list_deploy_options_recommends_machine_specs(vertex_local: StackHandle, deployed: Deployed) -> None:
    from vertexai.preview import model_garden

    options = model_garden.CustomModel(gcs_uri=deployed.gcs_uri).list_deploy_options()
    assert '[Option 1]\n    machine_type="g2-standard-12",\n    accelerator_type="NVIDIA_L4"' in options


def test_data_plane_requires_the_local_ca(vertex_local: StackHandle, deployed: Deployed) -> None:
    from google.cloud import aiplatform

    dns = aiplatform.Endpoint(deployed.endpoint).dedicated_endpoint_dns
    url = f"https://{dns}/v1/{deployed.endpoint}:predict"
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(url, json={"instances": [{"prompt": "hi"}]}, timeout=10, verify="/etc/ssl/certs/ca-certificates.crt")
    ok = requests.post(url, json={"instances": [{"prompt": "hi", "max_tokens": 2}]}, timeout=30,
                       verify=vertex_local.env["REQUESTS_CA_BUNDLE"])
    assert ok.status_code == 200
    assert ok.headers["X-Vertex-AI-Endpoint-Id"] == deployed.endpoint.rsplit("/", 1)[1]
