"""The one translator from Vertex AI answers to our error tree.

400/403/404/409 (and the gRPC codes behind them) are the caller's problem: not retried.
429 and 5xx, and dropped connections, are retryable. Both the raw-HTTP path
(``raise_for_vertex_status``) and the SDK path (``translate_api_error``) end here.
"""

from __future__ import annotations

import json
from typing import Any

from tune2serve.components.errors import VertexError, VertexUnavailableError, VertexUserError
from tune2serve.components.transport import is_unreachable

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def error_for_status(status_code: int, message: str, *, resource_name: str | None = None) -> VertexError:
    cls = VertexUnavailableError if status_code in RETRYABLE_STATUS else VertexUserError
    hint = {
        403: " (check the service account's IAM roles and that the Vertex AI API is enabled)",
        404: " (check the resource name, project and region)",
        429: " (quota or rate limit: for deployments check the 'Custom Model Serving' quota)",
    }.get(status_code, "")
    where = f"{resource_name}: " if resource_name else ""
    return cls(f"{where}Vertex AI answered {status_code}: {message}{hint}", status_code=status_code, resource_name=resource_name)


def _message_from_body(text: str) -> str:
    try:
        body: Any = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text.strip()[:500] or "(empty body)"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return f"{err.get('status', '')} {err.get('message', '')}".strip()
    return text.strip()[:500]


def raise_for_vertex_status(response: Any, *, resource_name: str | None = None) -> None:
    """Raises our error for a non-2xx ``httpx``/``requests`` response."""
    status = int(getattr(response, "status_code", 0))
    if 200 <= status < 300:
        return
    raise error_for_status(status, _message_from_body(response.text), resource_name=resource_name)


def translate_api_error(error: BaseException, *, resource_name: str | None = None) -> VertexError:
    """Turns a ``google.api_core`` exception (or a transport error, ``transport.py``:
    retryable ``VertexUnavailableError``) into ours."""
    from google.api_core import exceptions as gexc

    if isinstance(error, gexc.GoogleAPICallError):
        code = int(error.code or 500) if isinstance(error.code, int) else 500
        return error_for_status(code, error.message or str(error), resource_name=resource_name)
    if is_unreachable(error):
        where = f"{resource_name}: " if resource_name else ""
        return VertexUnavailableError(f"{where}cannot reach Vertex AI: {error}", resource_name=resource_name)
    where = f"{resource_name}: " if resource_name else ""
    return VertexError(f"{where}{type(error).__name__}: {error}", resource_name=resource_name)
