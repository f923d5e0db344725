"""Real requests to an endpoint's dedicated data plane, counting which deployed model
answered each (the ``X-Vertex-AI-Deployed-Model-Id`` header, or ``deployedModelId`` in
a JSON body), with its status and latency.

The decision code only sees a ``ProbeFn`` — "send n requests, give me the answers" — so
its logic is tested with simulated routing draws, and the real one below is used against
the local stack and the cloud. Each request is a streamed chat completion at temperature
0 of one of ``PROBE_PROMPTS`` (cycled, so every model sees each prompt many times), at
most ``max_tokens`` (default 32) tokens and never ``ignore_eos``: what it answers says,
beside who answered and how fast, whether the model stops by itself
(``finish_reason``), whether it said anything, how many tokens, the time to the first
token and per token after it (``signals.py`` judges those).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tune2serve.components.smoke_test import requests as rq
from tune2serve.components.vertex.dedicated_endpoint import DEPLOYED_MODEL_HEADER, request_url

DEFAULT_CONCURRENCY = 4
DEFAULT_REQUEST_TIMEOUT_S = 30.0
DEFAULT_MAX_TOKENS = 32
# Short prompts whose answers are a few tokens from any chat model: a model that runs to
# max_tokens on these does not stop. Fixed, so both models are asked the same questions.
PROBE_PROMPTS = (
    "hello",
    "Say OK.",
    "What is the capital of France? Answer in one word.",
    "What is two plus two? Answer with a number.",
    "Name a color.",
    "Reply with the word yes.",
)


@dataclass(frozen=True)
class Answer:
    """One request's outcome. ``deployed_model_id`` is None when nothing said who answered
    (a connection error, or a gateway error before routing). The rest is what a streamed
    answer said: which prompt it answered, ``finish_reason`` (None when the server did
    not say), output tokens (``usage``, else streamed chunks), characters of text, and
    milliseconds to the first chunk of text."""

    deployed_model_id: str | None
    ok: bool
    status: int
    latency_ms: float
    error: str = ""
    prompt: str = ""
    finish_reason: str | None = None
    output_tokens: int | None = None
    text_chars: int = 0
    ttft_ms: float | None = None


ProbeFn = Callable[[int], Sequence[Answer]]


def probe_request_body(prompt: str = "hello", max_tokens: int = 1, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                            "temperature": 0, "top_p": 1}
    if stream:  # usage in the last chunk: vLLM sends it only when asked
        body.update(stream=True, stream_options={"include_usage": True})
    return body


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


def _read_stream(response: Any, started: float) -> tuple[str, str | None, int | None, int, float | None]:
    """(who answered per the chunks, finish_reason, output tokens — usage's, else chunks
    of text —, characters of text once stripped, TTFT ms) of a streamed answer; raises
    ValueError for a chunk that is not JSON or carries an error."""
    who: str | None = None
    reason: str | None = None
    tokens: int | None = None
    ttft: float | None = None
    parts: list[str] = []
    for event in rq.iter_sse_events(response.iter_lines()):
        text = rq.stream_chunk_text(event)  # ValueError on garbage or an error chunk
        end_reason, end_tokens = rq.stream_chunk_end(event)
        reason, tokens = end_reason or reason, end_tokens if end_tokens is not None else tokens
        if who is None and not event.done:
            who = answered_by(None, event.data)
        if text:
            if ttft is None:
                ttft = (time.perf_counter() - started) * 1000
            parts.append(text)
    return who or "", reason, tokens if tokens is not None else len(parts), len("".join(parts).strip()), ttft


def send_streamed(client: Any, url: str, body: dict[str, Any], timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
                  ) -> Answer:
    """One streamed chat completion: who answered, its status, and what the stream said."""
    prompt = str(body["messages"][-1]["content"])
    started = time.perf_counter()
    header: str | None = None
    try:
        with client.stream("POST", url, json=body, timeout=timeout_s) as response:
            header = answered_by(response.headers, "")
            if not 200 <= response.status_code < 300:
                text = response.read().decode(errors="replace")
                return Answer(answered_by(response.headers, text), False, response.status_code,
                              (time.perf_counter() - started) * 1000, text[:200], prompt)
            who, reason, tokens, chars, ttft = _read_stream(response, started)
            status = response.status_code
    except (ValueError, TypeError, LookupError, AttributeError) as e:  # a garbled stream: a failed answer,
        return Answer(header, False, 200, (time.perf_counter() - started) * 1000,  # from whoever said it answered
                      f"garbled stream: {type(e).__name__}: {e}"[:200], prompt)
    except Exception as e:  # any transport failure is an answer too: a failed one (mid-stream: the answerer's)
        return Answer(header, False, 0, (time.perf_counter() - started) * 1000, f"{type(e).__name__}: {e}", prompt)
    return Answer(header or who or None, True, status, (time.perf_counter() - started) * 1000, "", prompt, reason,
                  tokens, chars, ttft)


def http_probe(client: Any, dns: str, endpoint: str, *, concurrency: int = DEFAULT_CONCURRENCY,
               timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S, max_tokens: int = DEFAULT_MAX_TOKENS) -> ProbeFn:
    """A ``ProbeFn`` that sends real streamed chat completions of ``PROBE_PROMPTS`` (in
    turn) to ``endpoint`` at ``dns`` with ``client`` (an ``httpx.Client`` from
    ``components.vertex.clients.http_client``)."""
    url = request_url("chat", dns, endpoint)
    bodies = [probe_request_body(p, max_tokens, stream=True) for p in PROBE_PROMPTS]

    def probe(n: int) -> list[Answer]:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(lambda i: send_streamed(client, url, bodies[i % len(bodies)], timeout_s), range(n)))

    return probe
