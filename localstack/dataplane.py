"""The dedicated-endpoint data plane: HTTPS on ``dedicatedEndpointDns``, routing each
request by the endpoint's trafficSplit to one deployed model, and within it to a healthy
replica (round-robin), as Vertex does.

Routes (``V`` = v1 or v1beta1, ``E`` = ``projects/P/locations/L/endpoints/ID``):
  POST /V/E:predict            {"instances": [{"prompt", "max_tokens", ...}]} → {"predictions": [str]}
  POST /V/E:rawPredict         the same body and answer, unwrapped by the SDK's raw path
  POST /V/E:streamRawPredict   one instance with "stream": true → server-sent events
  POST /V/E/chat/completions   OpenAI chat, unary or "stream": true (SSE passed through)
  POST /V/E/completions        OpenAI completions
  POST /V/E[/deployedModels/D]/invoke/PATH   PATH forwarded to the model server as is
Every answer carries ``X-Vertex-AI-Deployed-Model-Id`` and ``X-Vertex-AI-Endpoint-Id``
headers and, where the body is a JSON object, ``deployedModelId``; every answer a model
server gave carries ``x-tune2serve-engine: ENGINE/VERSION`` (``vllm/0.32.0``,
``transformers/5.x``): which engine served it.

Mapping onto the replica's OpenAI server, as Model Garden's vLLM container maps Vertex's
request kinds: a prompt goes to ``/v1/completions``, ``messages`` to
``/v1/chat/completions``; ``finish_reason`` and the rest of the answer are passed through.
On vLLM every sampling field is forwarded (``max_tokens``, ``temperature``, ``top_p``,
``ignore_eos``, ``top_k``, ``min_tokens``...); only ``model`` (the replica serves one model,
named after the deployed model id, never its local path), ``raw_response`` and
``deployedModelId`` stay here. ``transformers serve`` (the quick engine) refuses fields
it does not know, so vLLM-only fields are dropped for it (``ignore_eos`` is not honoured
there). Like Vertex's vLLM containers, ``:predict`` answers
``"Prompt:\\n{prompt}\\nOutput:\\n{text}"`` unless the instance sets ``"raw_response": true``.
Routing is weighted random, as Vertex's is; ``TUNE2SERVE_LOCAL_ROUTING_SEED`` makes it
repeatable, one stream of draws per endpoint (so an endpoint's routing does not depend on
the traffic other endpoints get: the test suite sets it, and a correct split is then never
flagged by chance in one run and not the next); the
``routing-skew`` fault overrides the split for one deployed model (to test that a promotion
notices routing that disagrees with its configuration). Every answer is recorded
(``self.metrics``) as Vertex AI's endpoint metrics count it: see ``monitoring.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tune2serve.localstack.api_errors import ApiError, error_body, invalid, not_found
from tune2serve.localstack.faults import FaultBook
from tune2serve.localstack.monitoring import MetricRecorder, Served
from tune2serve.localstack.serving import Supervisor
from tune2serve.localstack.state import StateStore

ROUTE = re.compile(
    r"^/(?P<version>v1|v1beta1)/(?P<endpoint>projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/endpoints/(?P<endpoint_id>[^/:]+))(?P<rest>:predict|:rawPredict|:streamRawPredict|/chat/completions"
    r"|/completions|(?:/deployedModels/(?P<pinned>[^/]+))?/invoke(?P<invoke>/.+))$"
)
COMPLETION_FIELDS = {"prompt", "max_tokens", "temperature", "top_p", "stream", "stop", "seed", "n",
                     "frequency_penalty", "presence_penalty", "logprobs", "echo", "suffix", "user",
                     "stream_options", "logit_bias"}
CHAT_DROPPED = {"model", "ignore_eos", "top_k", "min_p", "min_tokens", "repetition_penalty",
                "skip_special_tokens", "raw_response", "use_beam_search", "deployedModelId"}
# What never reaches a vLLM replica: the Vertex-side fields (the replica serves one model).
VLLM_DROPPED = {"model", "raw_response", "deployedModelId", "@requestFormat"}
ENGINE_HEADER = "x-tune2serve-engine"


def error_response(e: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.http_status, headers=headers)


def completion_body(instance: dict[str, Any], stream: bool, engine: str = "transformers") -> dict[str, Any]:
    """A completions request for the replica: on vLLM every field but the Vertex-side ones
    (so ``ignore_eos`` and the other vLLM sampling fields are honoured), on transformers
    the OpenAI fields it knows."""
    if engine == "vllm":
        body = {k: v for k, v in instance.items() if k not in VLLM_DROPPED and k != "messages"}
    else:
        body = {k: v for k, v in instance.items() if k in COMPLETION_FIELDS}
    body["stream"] = stream
    return body


def chat_body(body: dict[str, Any], engine: str = "transformers") -> dict[str, Any]:
    """A chat request for the replica (fields dropped as ``completion_body`` says)."""
    dropped = VLLM_DROPPED if engine == "vllm" else CHAT_DROPPED
    return {k: v for k, v in body.items() if k not in dropped}


class DataPlane:
    def __init__(self, store: StateStore, supervisor: Supervisor, faults: FaultBook) -> None:
        self.store, self.supervisor, self.faults = store, supervisor, faults
        seed = os.environ.get("TUNE2SERVE_LOCAL_ROUTING_SEED")
        self.seed = int(seed) if seed else None
        self._rngs: dict[str, random.Random] = {}  # endpoint id → its routing draws
        self._client: httpx.AsyncClient | None = None
        self.metrics = MetricRecorder()  # what localstack/monitoring.py serves

    @property
    def client(self) -> httpx.AsyncClient:
        # One pooled keep-alive client for every replica: no connection per request.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(300.0, connect=5.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
        return self._client

    def rng(self, endpoint_id: str) -> random.Random:
        """The endpoint's routing draws: seeded from the seed and the endpoint's id when a
        seed is set, else from the system's entropy."""
        if endpoint_id not in self._rngs:
            self._rngs[endpoint_id] = random.Random(None if self.seed is None else f"{self.seed}/{endpoint_id}")
        return self._rngs[endpoint_id]

    def choose(self, endpoint: dict[str, Any]) -> str:
        """The deployed model a request goes to: weighted by the trafficSplit, unless a
        routing-skew fault sends its target a fixed share whatever the split says."""
        rng = self.rng(str(endpoint.get("name", "")).rsplit("/", 1)[-1])
        split = {k: v for k, v in endpoint.get("trafficSplit", {}).items() if v > 0}
        skew = self.faults.routing_skew({d["id"]: d["model"] for d in endpoint.get("deployedModels", [])})
        if skew is not None:
            target, percent = skew
            if rng.random() * 100 < percent:
                return target
            split = {k: v for k, v in split.items() if k != target} or {
                d["id"]: 1 for d in endpoint.get("deployedModels", []) if d["id"] != target} or {target: 1}
        ids = sorted(split)
        if not ids:
            raise ApiError("FAILED_PRECONDITION", "The endpoint has no deployed model receiving traffic.")
        return rng.choices(ids, weights=[split[i] for i in ids])[0]

    async def handle(self, request: Request) -> Response:
        m = ROUTE.match(request.url.path)
        if m is None:
            return error_response(not_found(f"Path {request.url.path}"))
        endpoint = self.store.endpoint(m["endpoint_id"])
        if endpoint is None or endpoint["name"] != m["endpoint"]:
            return error_response(not_found(f"Endpoint {m['endpoint']}"))
        try:
            dm_id = m["pinned"] or self.choose(endpoint)
        except ApiError as e:
            return error_response(e)
        dm = next((d for d in endpoint.get("deployedModels", []) if d["id"] == dm_id), None)
        if dm is None:
            return error_response(not_found(f"Deployed model {dm_id} on endpoint {m['endpoint']}"))
        started = time.perf_counter()
        response = await self._serve(request, m, dm)
        self.metrics.record(Served(time.time(), m["project"], m["location"], m["endpoint_id"],
                                   endpoint.get("displayName", ""), dm_id, dm.get("displayName", ""),
                                   response.status_code, (time.perf_counter() - started) * 1000))
        return response

    async def _serve(self, request: Request, m: re.Match[str], dm: dict[str, Any]) -> Response:
        """The answer of deployed model ``dm``: faults first, then its model server."""
        dm_id = dm["id"]
        headers = {"X-Vertex-AI-Endpoint-Id": m["endpoint_id"], "X-Vertex-AI-Deployed-Model-Id": dm_id,
                   "X-Vertex-AI-Model": dm["model"], "X-Vertex-AI-Model-Version-Id": dm.get("modelVersionId", "1")}
        fault_ids = {dm_id, dm["model"]}
        raw = await request.body()
        delay = self.faults.take_latency_ms(fault_ids)
        if delay:
            await asyncio.sleep(delay / 1000)
        injected = self.faults.take_http_error(fault_ids, raw)
        if injected:
            status = "UNAVAILABLE" if injected == 503 else "RESOURCE_EXHAUSTED"
            return error_response(ApiError(status, f"Injected fault http-{injected} for deployed model {dm_id}."),
                                  headers)
        replica = self.supervisor.pick(dm_id)
        if replica is None:
            return error_response(ApiError("UNAVAILABLE", f"Deployed model {dm_id} has no healthy replica; "
                                           "retry later."), headers)
        headers[ENGINE_HEADER] = replica.engine_tag
        try:
            return await self._dispatch(m, raw, replica.url, dm, headers, replica.engine)
        except ApiError as e:
            return error_response(e, headers)
        except httpx.HTTPError as e:
            return error_response(ApiError("UNAVAILABLE", f"Model server of deployed model {dm_id} did not "
                                           f"answer: {type(e).__name__}"), headers)

    async def _dispatch(self, m: re.Match[str], raw: bytes, base: str, dm: dict[str, Any],
                        headers: dict[str, str], engine: str) -> Response:
        rest = m["rest"]
        if m["invoke"]:
            upstream = await self.client.post(base + m["invoke"], content=raw,
                                              headers={"Content-Type": "application/json"})
            return Response(upstream.content, upstream.status_code, headers=headers,
                            media_type=upstream.headers.get("content-type"))
        # :predict is transcoded to a PredictRequest by Google's front end, which reads JSON
        # leniently (lenient_json); the other routes hand the body to the model server as is.
        body = _json_object(raw, lenient=rest == ":predict")
        if rest in (":predict", ":rawPredict"):
            from tune2serve.localstack import protos

            protos.parse(m["version"], "PredictRequest", body)  # strict: unknown fields are 400
            predictions = await self._predict(body, base, engine)
            out = {"predictions": predictions, "deployedModelId": dm["id"], "model": dm["model"],
                   "modelDisplayName": dm.get("displayName", ""), "modelVersionId": dm.get("modelVersionId", "1")}
            return JSONResponse(out, headers=headers)
        if rest == ":streamRawPredict":
            instances = body.get("instances") or [body]
            inst = {**body.get("parameters", {}), **instances[0]}
            if "messages" in inst:
                return await self._stream(base + "/v1/chat/completions", {**chat_body(inst, engine), "stream": True},
                                          headers)
            return await self._stream(base + "/v1/completions", completion_body(inst, True, engine), headers)
        path = "/v1/chat/completions" if rest == "/chat/completions" else "/v1/completions"
        forward = (chat_body(body, engine) if rest == "/chat/completions"
                   else completion_body(body, bool(body.get("stream")), engine))
        if body.get("stream"):
            return await self._stream(base + path, forward, headers)
        data = await self._post_json(base + path, forward)
        data["model"] = body.get("model") or dm["model"]
        data["deployedModelId"] = dm["id"]
        return JSONResponse(data, headers=headers)

    async def _post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        upstream = await self.client.post(url, json=body)
        if upstream.status_code >= 400:
            status = "INVALID_ARGUMENT" if upstream.status_code < 500 else "INTERNAL"
            raise ApiError(status, f"The model server refused the request (HTTP {upstream.status_code}): "
                           f"{upstream.text[:500]}")
        return dict(upstream.json())

    async def _predict(self, body: dict[str, Any], base: str, engine: str) -> list[Any]:
        instances = body.get("instances") or []
        if not instances:
            raise invalid("instances must hold at least one instance.")
        params = body.get("parameters") or {}

        async def one(instance: Any) -> Any:
            if not isinstance(instance, dict):
                raise invalid('Each instance must be an object such as {"prompt": "...", "max_tokens": 64}.')
            inst = {**params, **instance}
            if "messages" in inst:
                data = await self._post_json(base + "/v1/chat/completions", {**chat_body(inst, engine), "stream": False})
                return data["choices"][0]["message"]["content"]
            if not isinstance(inst.get("prompt"), str):
                raise invalid('Each instance needs a string "prompt" (or "messages").')
            data = await self._post_json(base + "/v1/completions", completion_body(inst, False, engine))
            text = data["choices"][0]["text"]
            return text if inst.get("raw_response") else f"Prompt:\n{inst['prompt'].strip()}\nOutput:\n{text}"

        return list(await asyncio.gather(*(one(i) for i in instances)))

    async def _stream(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Response:
        req = self.client.build_request("POST", url, json=body)
        upstream = await self.client.send(req, stream=True)
        if upstream.status_code >= 400:
            text = (await upstream.aread()).decode(errors="replace")
            await upstream.aclose()
            return error_response(ApiError("INVALID_ARGUMENT", f"The model server refused the request "
                                           f"(HTTP {upstream.status_code}): {text[:500]}"), headers)

        async def relay() -> Any:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(relay(), status_code=upstream.status_code, headers=headers,
                                 media_type="text/event-stream")


def _json_object(raw: bytes, lenient: bool = False) -> dict[str, Any]:
    from tune2serve.localstack import lenient_json

    try:
        text = raw.decode("utf-8").strip(" \t\n\v\f\r") or "{}"
        body = json.loads(lenient_json.canonical(text) if lenient else text)
    except ValueError as e:  # UnicodeDecodeError and LenientJsonError are ValueErrors
        raise invalid(f"Invalid JSON payload received. {e}") from e
    if not isinstance(body, dict):
        raise invalid("Invalid JSON payload received. The body must be a JSON object.")
    return body


__all__ = ["DataPlane", "error_body"]
