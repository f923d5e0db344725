"""The local stack serving with vLLM, its default engine: a tiny Llama (head size 64, the size
vLLM's CPU attention runs) deployed through Model Garden's CustomModel.deploy, queried with
the four request kinds over the HTTPS data plane; the engine named in status and in a
header on every answer; vLLM's sampling fields honoured; a model that passes /health and
fails its first request never counted as a replica; `local up --engine` applying to the
replicas started after it.

One stack for the module, in a home of its own (the session's shared stack runs the quick
engine); skipped, saying how to install it, where the vLLM environment is missing.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.stack_fixtures import StackHandle
from tune2serve.cli.main import main
from tune2serve.localstack import serving
from tune2serve.localstack.dataplane import ENGINE_HEADER
from tune2serve.localstack.errors import StackError
from tune2serve.localstack.stack import LocalStack

pytestmark = pytest.mark.stack
EOS = 2  # the tiny models' eos_token_id
_VLLM_PYTHON = os.environ.get(serving.VLLM_PYTHON_VAR)  # where this machine's vLLM is, if not .venv-vllm


@pytest.fixture(autouse=True)
def vllm_python_kept(clean_environ: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """clean_environ clears TUNE2SERVE_*; the vLLM environment's place is machine set-up, kept."""
    if _VLLM_PYTHON:
        monkeypatch.setenv(serving.VLLM_PYTHON_VAR, _VLLM_PYTHON)


@dataclass(frozen=True)
class Served:
    stack: StackHandle
    endpoint: str
    model: str
    deployed_model_id: str
    dns: str
    version: str

    def post(self, suffix: str, body: dict[str, Any], stream: bool = False) -> requests.Response:
        return requests.post(f"https://{self.dns}/v1beta1/{self.endpoint}{suffix}", json=body, timeout=120,
                             verify=self.stack.env["REQUESTS_CA_BUNDLE"], stream=stream)


def tiny_llama(root: Path, name: str, head_dim: int) -> Path:
    """A tiny Llama, bf16 as exports are, at head size ``head_dim`` (64: hidden 128 over 2
    heads, what vLLM's CPU attention runs; 16: hidden 64 over 4 heads, what it does not)."""
    from tune2serve.demo.tiny_models import TinySpec, make_tiny_model

    heads = {64: 2, 16: 4}[head_dim]
    explicit = {"head_dim": head_dim} if "head_dim" in {f.name for f in dataclasses.fields(TinySpec)} else {}
    spec = TinySpec(hidden_size=heads * head_dim, intermediate_size=256, num_attention_heads=heads,
                    num_key_value_heads=2, **explicit)
    folder = make_tiny_model(root / name, spec, dtype="bfloat16")
    config = json.loads((folder / "config.json").read_text())
    assert config.get("head_dim", config["hidden_size"] // config["num_attention_heads"]) == head_dim
    return folder


@pytest.fixture(scope="module")
def vllm_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    try:
        serving.check_engine("vllm")
    except StackError as e:
        pytest.skip(str(e))
    stack = LocalStack(tmp_path_factory.mktemp("vllm-stack-home"))
    atexit.register(stack.down)
    try:
        stack.up(engine="vllm")
        config = stack.config
        yield StackHandle(stack.home, stack.env(), stack.api_endpoint, config.project, config.region, config.bucket)
    finally:
        stack.down()
        atexit.unregister(stack.down)


@pytest.fixture
def on_stack(vllm_stack: StackHandle, clean_environ: None, monkeypatch: pytest.MonkeyPatch) -> StackHandle:
    for name, value in vllm_stack.env.items():
        monkeypatch.setenv(name, value)
    vllm_stack.vertex_init()
    return vllm_stack


@pytest.fixture(scope="module")
def served(vllm_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> Served:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in vllm_stack.env.items():
            mp.setenv(name, value)
        uri = vllm_stack.upload(tiny_llama(tmp_path_factory.mktemp("models"), "tiny-llama-64", 64),
                                "models/tiny-llama-64")
        vllm_stack.vertex_init()
        from google.cloud import aiplatform
        from vertexai.preview import model_garden

        endpoint = model_garden.CustomModel(gcs_uri=uri).deploy(endpoint_display_name="vllm-tests",
                                                                model_display_name="tiny-llama-64")
        ep = aiplatform.Endpoint(endpoint.resource_name)
        dm = ep.gca_resource.deployed_models[0]
        return Served(vllm_stack, ep.resource_name, dm.model, dm.id, ep.dedicated_endpoint_dns,
                      serving.engine_version("vllm"))


def _events(response: requests.Response) -> list[dict[str, Any]]:
    lines = [line for line in response.iter_lines() if line.startswith(b"data: ") and line != b"data: [DONE]"]
    return [json.loads(line[len(b"data: "):]) for line in lines]


def test_status_names_the_engine_and_its_version(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(served.stack.home)
    assert main(["local", "status", "--json", "--home", home]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["engine"] == {"name": "vllm", "version": served.version}
    [ep] = [e for e in status["endpoints"] if e["name"] == served.endpoint]
    [dm] = ep["deployedModels"]
    assert [(r["engine"], r["healthy"]) for r in dm["replicas"]] == [(f"vllm/{served.version}", True)]
    assert main(["local", "status", "--home", home]) == 0
    text = capsys.readouterr().out
    assert f"engine: vllm {served.version}\n" in text and f"healthy on vllm/{served.version}" in text


def test_the_four_request_kinds_are_answered_by_vllm(served: Served) -> None:
    tag = f"vllm/{served.version}"
    messages = [{"role": "user", "content": "the capital of france is"}]
    predict = served.post(":predict", {"instances": [{"prompt": "hello world", "max_tokens": 5, "temperature": 0}]})
    unary = served.post("/chat/completions", {"model": served.model, "messages": messages, "max_tokens": 5,
                                              "temperature": 0, "top_p": 1})
    sse = served.post("/chat/completions", {"messages": messages, "max_tokens": 5, "temperature": 0,
                                            "stream": True}, stream=True)
    raw = served.post(":streamRawPredict", {"instances": [{"prompt": "hello world", "max_tokens": 4,
                                                           "temperature": 0, "stream": True}]}, stream=True)
    for answer in (predict, unary, sse, raw):
        assert answer.status_code == 200, answer.text
        assert answer.headers[ENGINE_HEADER] == tag
        assert answer.headers["X-Vertex-AI-Deployed-Model-Id"] == served.deployed_model_id
    assert predict.json()["predictions"][0].startswith("Prompt:\nhello world\nOutput:\n")
    body = unary.json()
    assert body["choices"][0]["finish_reason"] in ("stop", "length") and body["usage"]["completion_tokens"] <= 5
    chat_events, raw_events = _events(sse), _events(raw)
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in chat_events if e["choices"])
    assert streamed == body["choices"][0]["message"]["content"]  # one engine, temperature 0
    assert raw_events[-1]["choices"][0]["finish_reason"] == "length"
    # the replica serves under the deployed model id: no local path reaches an answer
    assert {e["model"] for e in chat_events + raw_events} == {served.deployed_model_id}
    for answer in (predict, unary):
        assert str(served.stack.home) not in answer.text


def test_ignore_eos_and_finish_reason_reach_vllm(served: Served) -> None:
    """EOS made the likeliest token: without ignore_eos vLLM stops at once (finish_reason
    'stop'); with it, vLLM generates max_tokens ('length') — the field is honoured, not dropped."""
    base = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0,
            "logit_bias": {str(EOS): 100}}
    stops = served.post("/chat/completions", base).json()
    runs_on = served.post("/chat/completions", {**base, "ignore_eos": True}).json()
    assert stops["choices"][0]["finish_reason"] == "stop" and stops["usage"]["completion_tokens"] <= 1
    assert (runs_on["choices"][0]["finish_reason"], runs_on["usage"]["completion_tokens"]) == ("length", 6)
    sse = served.post(":streamRawPredict", {"instances": [{"prompt": "hi", "max_tokens": 3, "stream": True,
                                                           "ignore_eos": True, "logit_bias": {str(EOS): 100}}]},
                      stream=True)
    assert _events(sse)[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("field, value", [("top_p", 0.0), ("temperature", -1.0), ("max_tokens", 0)])
def test_sampling_fields_are_vllms_to_judge(served: Served, field: str, value: float) -> None:
    """A value vLLM refuses comes back as Vertex's INVALID_ARGUMENT quoting vLLM: the field
    reached the engine."""
    answer = served.post("/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                               field: value})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["status"] == "INVALID_ARGUMENT" and field in answer.json()["error"]["message"]


def test_a_model_that_is_healthy_but_cannot_answer_is_never_a_replica(on_stack: StackHandle, served: Served,
                                                                      tmp_path: Path) -> None:
    """Head size 16: vLLM's server answers /health, then fails every request; the deploy
    fails quoting vLLM, and no endpoint or model server is left behind."""
    from google.api_core import exceptions
    from google.cloud import aiplatform
    from vertexai.preview import model_garden

    stack = LocalStack(on_stack.home)
    pids = sorted(stack.pids())
    uri = on_stack.upload(tiny_llama(tmp_path, "head16", 16), "models/tiny-head16")
    with pytest.raises((exceptions.GoogleAPICallError, RuntimeError)) as failure:
        model_garden.CustomModel(gcs_uri=uri).deploy(endpoint_display_name="head16")
    assert "answered /health but refused its first completion" in str(failure.value)
    assert "head_dim" in str(failure.value) or "head size" in str(failure.value)
    assert [e.display_name for e in aiplatform.Endpoint.list(filter='display_name="head16"')] == []
    assert sorted(stack.pids()) == pids


def test_up_engine_applies_to_replicas_started_after_it(on_stack: StackHandle, served: Served,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from google.cloud import aiplatform

    home = str(on_stack.home)
    assert main(["local", "up", "--engine", "transformers", "--home", home]) == 0
    assert "engine: transformers/" in capsys.readouterr().out
    try:
        ep = aiplatform.Endpoint(served.endpoint)
        ep.deploy(aiplatform.Model(served.model), deployed_model_display_name="quick", traffic_percentage=50,
                  min_replica_count=1, max_replica_count=1)
        quick = next(dm.id for dm in aiplatform.Endpoint(served.endpoint).gca_resource.deployed_models
                     if dm.display_name == "quick")
        engines = {}
        for dm_id in (served.deployed_model_id, quick):
            r = requests.post(f"https://{served.dns}/v1/{served.endpoint}/deployedModels/{dm_id}/invoke/v1/completions",
                              json={"prompt": "hi", "max_tokens": 1}, timeout=60,
                              verify=on_stack.env["REQUESTS_CA_BUNDLE"])
            assert r.status_code == 200, r.text
            engines[dm_id] = r.headers[ENGINE_HEADER].split("/")[0]
        assert engines == {served.deployed_model_id: "vllm", quick: "transformers"}
        ep.undeploy(quick, traffic_split={served.deployed_model_id: 100})
    finally:
        assert main(["local", "up", "--engine", "vllm", "--home", home]) == 0
