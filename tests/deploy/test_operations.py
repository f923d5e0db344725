"""wait_for_operation on real ``google.api_core`` Operation futures whose polls go over
HTTP to a small real server playing a Vertex operation (running for N polls, then done
or failed; or answering errors). The clock and sleep are injected so deadlines and
backoff are checked without waiting."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tune2serve.components.errors import OperationFailedError, VertexUserError
from tune2serve.components.vertex.operations import wait_for_operation
from tune2serve.components.vertex.retry import PollPolicy

NAME = "projects/p/locations/r/operations/42"
POLICY = PollPolicy(initial_interval_s=1.0, max_interval_s=3.0, multiplier=2.0)


@dataclass
class Script:
    """What the server answers to successive GETs: "running", "done", "failed", or an
    HTTP status code (an error answer); the last entry repeats."""

    answers: list[Any] = field(default_factory=lambda: ["running"])
    gets: int = 0
    cancels: int = 0


class _Handler(BaseHTTPRequestHandler):
    script: Script

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        s = self.script
        answer = s.answers[min(s.gets, len(s.answers) - 1)]
        s.gets += 1
        if isinstance(answer, int):
            self._send(answer, {"error": {"code": answer, "message": f"injected {answer}", "status": "X"}})
        elif answer == "done":
            self._send(200, {"name": NAME, "done": True, "response": {
                "@type": "type.googleapis.com/google.protobuf.Struct", "value": {"endpoint": "projects/p/e/1"}}})
        elif answer == "failed":
            self._send(200, {"name": NAME, "done": True, "error": {"code": 9, "message": "Model server never started"}})
        else:
            self._send(200, {"name": NAME, "done": False})

    def do_POST(self) -> None:  # noqa: N802
        self.script.cancels += 1
        self._send(200, {})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"script": Script()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def _operation(server: tuple[str, type[_Handler]], *answers: Any) -> tuple[Any, Script]:
    """A real api_core Operation polling the server (as a GAPIC REST transport does)."""
    import httpx
    from google.api_core import exceptions, operation
    from google.longrunning import operations_pb2
    from google.protobuf import json_format, struct_pb2

    base, handler = server
    handler.script = Script(list(answers))

    def refresh(retry: Any = None) -> Any:
        response = httpx.get(f"{base}/v1/{NAME}", timeout=5)
        if response.status_code >= 400:
            raise exceptions.from_http_status(response.status_code, response.json()["error"]["message"])
        return json_format.ParseDict(response.json(), operations_pb2.Operation())

    def cancel() -> None:
        httpx.post(f"{base}/v1/{NAME}:cancel", timeout=5)

    first = operations_pb2.Operation(name=NAME, done=False)
    return operation.Operation(first, refresh, cancel, result_type=struct_pb2.Struct), handler.script


class FakeClock:
    """Time that moves only when slept: deadlines are exact, tests do not wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event", "") for r in caplog.records if r.name.endswith("vertex.operations")]


def test_name_written_down_first_then_polled_with_backoff_until_done(server, caplog) -> None:  # type: ignore[no-untyped-def]
    op, script = _operation(server, "running", "running", "running", "running", "done")
    clock, seen_at_start = FakeClock(), []
    with caplog.at_level(logging.INFO):
        result = wait_for_operation(op, what="deploy of x", deadline_s=60, policy=POLICY,
                                    on_started=lambda name: seen_at_start.append((name, script.gets)),
                                    sleep=clock.sleep, clock=clock)
    assert dict(result) == {"endpoint": "projects/p/e/1"}
    assert seen_at_start == [(NAME, 0)]  # handed out before the first poll
    assert clock.sleeps == [1.0, 2.0, 3.0, 3.0]  # exponential, capped at max_interval_s
    assert script.gets == 5
    assert _events(caplog) == ["operation.started"] + ["operation.progress"] * 4 + ["operation.done"]


def test_failed_operation_carries_vertex_message_and_code(server) -> None:  # type: ignore[no-untyped-def]
    op, _ = _operation(server, "running", "failed")
    clock = FakeClock()
    with pytest.raises(OperationFailedError, match=r"deploy of x failed: Vertex AI says: Model server never started "
                                                   rf"\(operation {NAME}\)") as info:
        wait_for_operation(op, what="deploy of x", deadline_s=60, policy=POLICY, sleep=clock.sleep, clock=clock)
    assert (info.value.operation_name, info.value.status_code) == (NAME, 9)


def test_deadline_cancels_the_operation_and_says_what_to_do(server) -> None:  # type: ignore[no-untyped-def]
    op, script = _operation(server, "running")
    clock = FakeClock()
    with pytest.raises(OperationFailedError, match=rf"deploy of x: operation {NAME} did not finish within 5 s and was "
                                                   r"asked to cancel; raise the timeout \(--deploy-timeout\)"):
        wait_for_operation(op, what="deploy of x", deadline_s=5, policy=POLICY, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [1.0, 2.0] and clock.now <= 5  # never sleeps past the deadline
    assert script.cancels == 1


def test_a_poll_answering_503_is_not_the_operation_failing(server) -> None:  # type: ignore[no-untyped-def]
    op, script = _operation(server, 503, 503, "done")
    clock = FakeClock()
    result = wait_for_operation(op, what="deploy of x", deadline_s=60, policy=POLICY, sleep=clock.sleep, clock=clock)
    assert dict(result) == {"endpoint": "projects/p/e/1"} and script.gets == 3


def test_a_poll_answering_404_stops_at_once(server) -> None:  # type: ignore[no-untyped-def]
    op, script = _operation(server, 404)
    clock = FakeClock()
    with pytest.raises(VertexUserError, match=rf"{NAME}: Vertex AI answered 404: injected 404") as info:
        wait_for_operation(op, what="deploy of x", deadline_s=60, policy=POLICY, sleep=clock.sleep, clock=clock)
    assert info.value.status_code == 404 and script.gets == 1 and clock.sleeps == []
