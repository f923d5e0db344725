"""Pure parts of the smoke test: golden files, request bodies, SSE, statistics; and the
data-plane client's parsing and retry logic over httpx.MockTransport (only those)."""

from __future__ import annotations

import json

import httpx
import pytest

from tune2serve.components.errors import UsageError
from tune2serve.components.smoke_test import requests as rq
from tune2serve.components.smoke_test.dataplane import DataPlane
from tune2serve.components.smoke_test.golden import GoldenCase, load_golden, parse_golden
from tune2serve.components.smoke_test.stats import percentile, summarize
from tune2serve.components.vertex.dedicated_endpoint import request_url
from tune2serve.components.vertex.resources import endpoint_name
from tune2serve.components.vertex.retry import RetryPolicy

EP = endpoint_name("projects/p/locations/l/endpoints/7")
FAST = RetryPolicy(initial_delay_s=0.0, max_delay_s=0.0, max_attempts=3, deadline_s=5.0)


def test_golden_cases_parse() -> None:
    text = ('# comment\n{"prompt": "hi", "expect": "h.llo"}\n\n'
            '{"name": "n", "messages": [{"role": "user", "content": "a"}], "expect_substring": "(x)", "max_tokens": 4}\n')
    assert parse_golden(text) == [
        GoldenCase("case-1", ({"role": "user", "content": "hi"},), expect="h.llo"),
        GoldenCase("n", ({"role": "user", "content": "a"},), expect_substring="(x)", max_tokens=4),
    ]
    assert [c.name for c in load_golden("")] == ["sanity"]


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", r"golden, line 1: not valid JSON"),
    ('{"prompt": "a", "messages": []}', "exactly one of"),
    ('{"prompt": "a", "expect": "("}', "not a valid regular expression"),
    ('{"prompt": "a", "expected": "x"}', r"unknown field\(s\) expected"),
    ('{"messages": [{"role": "user"}]}', "non-empty list"),
])
def test_bad_golden_lines_are_usage_errors(line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_golden(line, "golden")


def test_case_check() -> None:
    case = GoldenCase("c", ({"role": "user", "content": "q"},), expect=r"\bparis\b", expect_substring="is")
    assert case.check("it is paris") is None
    assert case.check("it is rome") == r"expected a match for /\bparis\b/"
    assert GoldenCase("c", ()).check("  ") == "expected a non-empty answer"


def test_request_urls_and_bodies() -> None:
    assert request_url("chat", "1.2.3.4:443", EP) == "https://1.2.3.4:443/v1beta1/projects/p/locations/l/endpoints/7/chat/completions"
    assert request_url("stream_raw_predict", "d", EP) == "https://d/v1/projects/p/locations/l/endpoints/7:streamRawPredict"
    msgs = [{"role": "user", "content": "q"}]
    assert rq.request_body("chat_stream", msgs, "q", model="m", max_tokens=8) == {
        "model": "m", "temperature": 0, "top_p": 1, "max_tokens": 8, "messages": msgs, "stream": True,
        "stream_options": {"include_usage": True}}
    assert rq.request_body("stream_raw_predict", msgs, "q", model="m", max_tokens=8) == {
        "instances": [{"prompt": "q", "temperature": 0, "top_p": 1, "max_tokens": 8, "stream": True}]}


def test_sse_parsing() -> None:
    lines = [": keep-alive", 'data: {"choices": [{"delta": {"role": "assistant"}}]}', "",
             'data: {"choices": [{"delta": {"content": "pa"}}]}', "", 'data: {"choices": [{"delta":',
             'data:  {"content": "ris"}}]}', "", "data: [DONE]", ""]
    events = rq.parse_sse_lines(lines)
    assert [rq.stream_chunk_text(e) for e in events] == ["", "pa", "ris", ""]
    assert events[-1].done
    assert rq.parse_sse_lines(['{"predictions": ["x"]}']) == [rq.StreamEvent('{"predictions": ["x"]}')]
    with pytest.raises(ValueError, match="the stream carried an error: boom"):
        rq.stream_chunk_text(rq.StreamEvent('{"error": {"message": "boom"}}'))


def test_statistics() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 95) == 5.0
    assert summarize([1.0, 3.0], [], 10, 2.0, 1, 3, 1) == {
        "latency_p50_s": 2.0, "latency_p95_s": 2.9, "tokens_per_s": 5.0, "requests": 2.0, "errors": 1.0,
        "checks_passed": 3.0, "checks_failed": 1.0}


def _dataplane(handler) -> DataPlane:  # type: ignore[no-untyped-def]
    return DataPlane(httpx.Client(transport=httpx.MockTransport(handler)), lambda: "fake-secret-token")


def test_warmup_503s_are_retried_then_the_answer_is_read() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if len(seen) < 3:
            return httpx.Response(503, json={"error": {"status": "UNAVAILABLE", "message": "warming up"}})
        return httpx.Response(200, headers={"X-Vertex-AI-Deployed-Model-Id": "42"},
                              json={"choices": [{"message": {"content": "paris"}}], "usage": {"completion_tokens": 2}})

    ex = _dataplane(handler).send("chat", "https://d/x", {"messages": []}, FAST)
    assert (ex.answer, ex.attempts, ex.deployed_model_id, ex.completion_tokens) == ("paris", 3, "42", 2)
    assert seen == ["Bearer fake-secret-token"] * 3


def test_a_stream_is_parsed_into_chunks() -> None:
    body = "".join(f"data: {json.dumps({'choices': [{'delta': {'content': t}}]})}\n\n" for t in ["a", "b", "c"])
    body += "data: [DONE]\n\n"
    ex = _dataplane(lambda r: httpx.Response(200, text=body)).send("chat_stream", "https://d/x", {}, FAST)
    assert (ex.answer, ex.chunks) == ("abc", 3)
    assert ex.ttft_s is not None and ex.ttft_s <= ex.latency_s


def test_an_endpoint_that_keeps_failing_raises_after_the_attempts() -> None:
    from tune2serve.components.errors import VertexUnavailableError

    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, text="no healthy upstream")

    with pytest.raises(VertexUnavailableError, match="503"):
        _dataplane(handler).send("predict", "https://d/x", {}, FAST)
    assert len(calls) == 3
