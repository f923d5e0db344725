"""A dedicated endpoint's data plane, as Vertex AI serves it: where each request kind
goes, and the header by which an answer says which deployed model served it. Smoke-test
and verify-traffic both call it; the local stack serves the same paths."""

from __future__ import annotations

DEPLOYED_MODEL_HEADER = "X-Vertex-AI-Deployed-Model-Id"


def request_url(kind: str, dns: str, endpoint: object) -> str:
    """Chat completions live under v1beta1; :predict and :streamRawPredict use v1, the
    path ``Endpoint.predict(use_dedicated_endpoint=True)`` calls. ``endpoint`` is the
    endpoint's resource name (a string or a ``ResourceName``)."""
    if kind in ("chat", "chat_stream"):
        return f"https://{dns}/v1beta1/{endpoint}/chat/completions"
    verb = {"predict": "predict", "stream_raw_predict": "streamRawPredict"}[kind]
    return f"https://{dns}/v1/{endpoint}:{verb}"
