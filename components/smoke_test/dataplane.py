"""Sends one data-plane request to a dedicated endpoint and times it.

The ``httpx.Client`` and the bearer-token provider are injected: the CLI and component
pass ``clients.http_client``-style settings (TLS verified against the local CA on the
local stack) and ``clients.access_token``; unit tests pass an ``httpx.MockTransport``;
the no-token-in-logs test passes a provider returning a fake secret. The token is set
per request and never stored on the exchange, so nothing that is reported can hold it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.errors import VertexUnavailableError
from tune2serve.components.smoke_test import requests as rq
from tune2serve.components.vertex.dedicated_endpoint import DEPLOYED_MODEL_HEADER
from tune2serve.components.vertex.errors import raise_for_vertex_status
from tune2serve.components.vertex.retry import RetryPolicy, call_with_retry

TokenProvider = Callable[[], "str | None"]

# The first request waits out warm-up (replicas still loading answer 503, a cold
# gateway 429, a DNS not yet routed refuses the connection): bounded backoff.
WARMUP_POLICY = RetryPolicy(initial_delay_s=1.0, max_delay_s=15.0, max_attempts=12, deadline_s=180.0)
# Later requests: a blip is retried, a replica that keeps failing is not waited on.
REQUEST_POLICY = RetryPolicy(initial_delay_s=0.5, max_delay_s=4.0, max_attempts=4, deadline_s=20.0)


@dataclass
class Exchange:
    """One request and its answer."""

    kind: str
    url: str
    body: dict[str, Any]
    status: int = 0
    answer: str = ""
    chunks: int = 0
    latency_s: float = 0.0
    ttft_s: float | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None  # "stop", "length" (cut off at max_tokens)...; None when not said
    deployed_model_id: str = ""
    attempts: int = 0
    raw: dict[str, Any] = field(default_factory=dict)


class DataPlane:
    def __init__(self, client: Any, token_provider: TokenProvider, *, timeout_s: float = 60.0) -> None:
        self.client = client
        self.token_provider = token_provider
        self.timeout_s = timeout_s

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        token = self.token_provider()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def send(self, kind: str, url: str, body: dict[str, Any], policy: RetryPolicy = REQUEST_POLICY) -> Exchange:
        """Sends with retries on 429/5xx/connection errors; raises the last error."""
        exchange = Exchange(kind, url, body)

        def once() -> Exchange:
            exchange.attempts += 1
            return self._once(exchange)

        return call_with_retry(once, what=f"{kind} request to {url}", policy=policy)

    def _once(self, ex: Exchange) -> Exchange:
        import httpx

        started = time.perf_counter()
        try:
            if ex.kind in ("chat_stream", "stream_raw_predict"):
                self._stream(ex, started)
            else:
                response = self.client.post(ex.url, json=ex.body, headers=self._headers(), timeout=self.timeout_s)
                ex.latency_s = time.perf_counter() - started
                ex.status = response.status_code
                raise_for_vertex_status(response, resource_name=ex.url)
                self._unary_answer(ex, response.json(), response.headers)
        except httpx.TransportError as e:
            raise VertexUnavailableError(f"{ex.url}: cannot reach the endpoint ({type(e).__name__}: {e})") from e
        return ex

    def _unary_answer(self, ex: Exchange, doc: Any, headers: Any) -> None:
        if not isinstance(doc, dict):
            raise ValueError(f"the answer is not a JSON object: {str(doc)[:200]}")
        ex.raw = doc
        ex.deployed_model_id = str(headers.get(DEPLOYED_MODEL_HEADER) or doc.get("deployedModelId") or "")
        if ex.kind == "chat":
            ex.answer = rq.chat_answer(doc)
            ex.completion_tokens = rq.usage_tokens(doc)
            ex.finish_reason = rq.finish_reason(doc)
        else:
            ex.answer = rq.predict_answer(doc)

    def _stream(self, ex: Exchange, started: float) -> None:
        with self.client.stream("POST", ex.url, json=ex.body, headers=self._headers(), timeout=self.timeout_s) as r:
            ex.status = r.status_code
            if r.status_code >= 300:
                r.read()
                raise_for_vertex_status(r, resource_name=ex.url)
            ex.deployed_model_id = str(r.headers.get(DEPLOYED_MODEL_HEADER) or "")
            parts: list[str] = []
            pending: list[str] = []
            for line in r.iter_lines():
                bare_json = not line.startswith(("data:", ":")) and line.lstrip().startswith(("{", "["))
                if line and not bare_json:
                    pending.append(line)  # an SSE event continues until a blank line
                    continue
                for event in rq.parse_sse_lines(pending + ([line] if line else []) + [""]):
                    self._take_event(ex, event, parts, started)
                pending = []
            for event in rq.parse_sse_lines(pending):
                self._take_event(ex, event, parts, started)
        ex.latency_s = time.perf_counter() - started
        ex.answer = "".join(parts)
        if ex.chunks == 0:
            raise ValueError("the stream ended without a single chunk of text")

    @staticmethod
    def _take_event(ex: Exchange, event: rq.StreamEvent, parts: list[str], started: float) -> None:
        text = rq.stream_chunk_text(event)
        reason, tokens = rq.stream_chunk_end(event)  # the last chunks say why it stopped, and how many tokens
        ex.finish_reason = reason or ex.finish_reason
        ex.completion_tokens = tokens if tokens is not None else ex.completion_tokens
        if not ex.deployed_model_id and not event.done:
            try:
                ex.deployed_model_id = str(json.loads(event.data).get("deployedModelId") or "")
            except (json.JSONDecodeError, AttributeError):
                pass
        if text:
            if ex.ttft_s is None:
                ex.ttft_s = time.perf_counter() - started
            ex.chunks += 1
            parts.append(text)
