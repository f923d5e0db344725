"""Real requests to an endpoint's dedicated data plane, counting which deployed model
answered each (the ``X-Vertex-AI-Deployed-Model-Id`` header, or ``deployedModelId`` in
a JSON body), with its status and latency.

The decision code only sees a ``ProbeFn`` — "send n requests, give me the answers" — so
its logic is tested with simulated routing draws, and the real one below is used against
the local stack and the cloud. Requests are the cheapest real ones: a one-token chat
completion at temperature 0.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tune2serve.components.vertex.dedicated_endpoint import DEPLOYED_MODEL_HEADER, request_url

DEFAULT_CONCURRENCY = 4
DEFAULT_REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Answer:
    """One request's outcome. ``deployed_model_id`` is None when nothing said who answered
    (a connection error, or a gateway error before routing)."""

    deployed_model_id: str | None
    ok: bool
    status: int
    latency_ms: float
    error: str = ""


ProbeFn = Callable[[int], Sequence[Answer]]


def probe_request_body(prompt: str = "hello", max_tokens: int = 1) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0, "top_p": 1}


def answered_by(headers: Any, body_text: str) -> str | None:
    """Which deployed model answered: the header first, else the JSON body's field."""
    value = headers.get(DEPLOYED_MODEL_HEADER) if headers is not None else None
    if value:
        return str(value)
    try:
        body = json.loads(body_text)
    except (json.JSONDecodeError, ValueError):
        return None
    if isinstance(body, dict) and body.get("deployedModelId"):
        return str(body["deployedModelId"])
    return None


def send_one(client: Any, url: str, body: dict[str, Any], timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> Answer:
    started = time.perf_counter()
    try:
        response = client.post(url, json=body, timeout=timeout_s)
    except Exception as e:  # any transport failure is an answer too: a failed one
        return Answer(None, False, 0, (time.perf_counter() - started) * 1000, f"{type(e).__name__}: {e}")
    latency = (time.perf_counter() - started) * 1000
    ok = 200 <= response.status_code < 300
    return Answer(answered_by(response.headers, response.text), ok, response.status_code, latency,
                  "" if ok else response.text[:200])


def http_probe(client: Any, dns: str, endpoint: str, *, concurrency: int = DEFAULT_CONCURRENCY,
               timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S) -> ProbeFn:
    """A ``ProbeFn`` that sends real chat completions to ``endpoint`` at ``dns`` with
    ``client`` (an ``httpx.Client`` from ``components.vertex.clients.http_client``)."""
    url = request_url("chat", dns, endpoint)
    body = probe_request_body()

    def probe(n: int) -> list[Answer]:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(lambda _: send_one(client, url, body, timeout_s), range(n)))

    return probe
