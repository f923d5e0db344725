"""A service that cannot be reached is told from a bad request by the real exception
classes of the HTTP stacks (``components/transport.py``), not by class names: real
failures on loopback — refused, dropped without an answer, timed out — through httpx and
requests become ``VertexUnavailableError`` (retried); a certificate problem and a plain
bug do not. And the SDK's log lines never reach stdout (``--json``'s): ``logs.configure``
routes them through the logging API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from tune2serve.components.errors import VertexError, VertexUnavailableError
from tune2serve.components.transport import is_unreachable
from tune2serve.components.vertex.errors import translate_api_error
from tune2serve.localstack.ports import free_port


def _serve(on_connect: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback TCP server doing ``on_connect`` with every connection; yields host:port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        held = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)
            on_connect(conn)
        for conn in held:
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture
def dropping() -> Iterator[str]:
    """Accepts and closes at once: the server went away without answering."""
    yield from _serve(lambda conn: conn.close())


@pytest.fixture
def silent() -> Iterator[str]:
    """Accepts and never answers."""
    yield from _serve(lambda conn: None)


@pytest.fixture
def plain_http() -> Iterator[str]:
    """Answers plain HTTP whatever it is sent: a TLS client sees no TLS (a certificate-
    layer failure, not an unreachable service)."""
    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    yield from _serve(answer)


def _httpx(url: str) -> BaseException:
    import httpx

    try:
        httpx.get(url, timeout=0.5)
    except Exception as e:
        return e
    raise AssertionError(f"{url} answered")


def _requests(url: str) -> BaseException:
    import requests

    try:
        requests.get(url, timeout=0.5)
    except Exception as e:
        return e
    raise AssertionError(f"{url} answered")


@pytest.mark.parametrize("client", [_httpx, _requests], ids=["httpx", "requests"])
@pytest.mark.parametrize("where", ["refused", "dropping", "silent"])
def test_an_unreachable_service_is_retryable(client: Callable[[str], BaseException], where: str,
                                             request: pytest.FixtureRequest) -> None:
    host = f"127.0.0.1:{free_port()}" if where == "refused" else request.getfixturevalue(where)
    error = client(f"http://{host}/v1/projects/p")
    assert is_unreachable(error), type(error).__mro__
    translated = translate_api_error(error, resource_name="projects/p")
    assert isinstance(translated, VertexUnavailableError)
    assert translated.message.startswith("projects/p: cannot reach Vertex AI: ")


def test_a_certificate_problem_and_a_bug_are_not_retried(plain_http: str) -> None:
    error = _requests(f"https://{plain_http}/v1/projects/p")
    assert not is_unreachable(error)
    for e in (error, ValueError("a bug")):
        translated = translate_api_error(e)
        assert isinstance(translated, VertexError) and not isinstance(translated, VertexUnavailableError)


def test_the_sdk_logs_to_stderr_never_to_stdout() -> None:
    """In a fresh interpreter, as a command starts: configure first, then the SDK is
    imported and logs through its own module loggers."""
    code = (
        "import logging, sys\n"
        "from tune2serve.components import logs\n"
        "logs.configure()\n"
        "from google.cloud import aiplatform\n"
        "from google.cloud.aiplatform import base\n"
        "models = base.Logger('google.cloud.aiplatform.models')\n"
        "models.warning('sdk warning'); models.info('sdk chatter')\n"
        "base.Logger('vertexai.preview.x').error('vertexai error')\n"
        "own = [n for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)\n"
        "       and n.startswith(('google.cloud.aiplatform.', 'vertexai.')) and lg.handlers]\n"
        "sys.stderr.write('own handlers: %r\\n' % own)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"TUNE2SERVE_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [(r["logger"], r["message"]) for r in lines] == [("google.cloud.aiplatform.models", "sdk warning"),
                                                            ("vertexai.preview.x", "vertexai error")]
    assert "own handlers: []" in done.stderr  # no SDK logger got a handler of its own (stdout)
