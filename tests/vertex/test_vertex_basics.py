"""Resource names, the retry policy and the error translator."""

from __future__ import annotations

import pytest

from tune2serve.components.errors import UsageError, VertexUnavailableError, VertexUserError
from tune2serve.components.vertex.clients import target
from tune2serve.components.vertex.errors import error_for_status, translate_api_error
from tune2serve.components.vertex.resources import endpoint_name, model_name
from tune2serve.components.vertex.retry import RetryPolicy, call_with_retry


def test_resource_names_round_trip() -> None:
    text = "projects/p1/locations/us-central1/endpoints/123"
    assert str(endpoint_name(text)) == text
    assert str(endpoint_name("123", "p1", "us-central1")) == text
    assert model_name("projects/p/locations/l/models/9@2").id == "9"
    with pytest.raises(UsageError, match="is a model name, expected an endpoint"):
        endpoint_name("projects/p/locations/l/models/9")
    with pytest.raises(UsageError, match="not an endpoint resource name"):
        endpoint_name("123")


@pytest.mark.parametrize(("status", "cls"), [(400, VertexUserError), (404, VertexUserError), (409, VertexUserError),
                                             (429, VertexUnavailableError), (503, VertexUnavailableError)])
def test_status_classification(status: int, cls: type) -> None:
    err = error_for_status(status, "boom", resource_name="projects/p/locations/l/endpoints/1")
    assert isinstance(err, cls) and err.status_code == status
    assert "projects/p/locations/l/endpoints/1" in str(err)


def test_google_api_errors_are_translated() -> None:
    from google.api_core import exceptions as gexc

    assert isinstance(translate_api_error(gexc.NotFound("gone")), VertexUserError)
    assert isinstance(translate_api_error(gexc.ServiceUnavailable("later")), VertexUnavailableError)
    assert "Custom Model Serving" in str(translate_api_error(gexc.TooManyRequests("quota")))


def test_retry_retries_only_retryable_errors() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise VertexUnavailableError("503")
        return "ok"

    assert call_with_retry(flaky, what="t", policy=RetryPolicy(max_attempts=5), sleep=slept.append) == "ok"
    assert len(calls) == 3 and len(slept) == 2

    def user_error() -> None:
        calls.append(1)
        raise VertexUserError("400")

    calls.clear()
    with pytest.raises(VertexUserError):
        call_with_retry(user_error, what="t", sleep=slept.append)
    assert len(calls) == 1


def test_retry_gives_up_after_max_attempts() -> None:
    def down() -> None:
        raise VertexUnavailableError("503")

    with pytest.raises(VertexUnavailableError):
        call_with_retry(down, what="t", policy=RetryPolicy(max_attempts=3), sleep=lambda s: None)


def test_delays_grow_and_are_capped() -> None:
    import random

    d = RetryPolicy(initial_delay_s=1, max_delay_s=4, max_attempts=6).delays(random.Random(0))
    assert len(d) == 5 and all(0 <= x <= 4 for x in d)


def test_target_reads_the_local_stack_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert target("p", "us-central1").rest_base_url == "https://us-central1-aiplatform.googleapis.com"
    monkeypatch.setenv("TUNE2SERVE_VERTEX_API_ENDPOINT", "http://127.0.0.1:9999")
    t = target("p", "us-central1")
    assert t.is_local and t.rest_base_url == "http://127.0.0.1:9999"
    with pytest.raises(UsageError, match="--project"):
        target("", "us-central1")
