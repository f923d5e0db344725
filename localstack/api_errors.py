"""Vertex-shaped error bodies: ``{"error": {"code", "message", "status"}}``.

Google APIs answer errors with the HTTP status and a ``google.rpc.Status``-like body;
``google.api_core.exceptions.from_http_response`` reads exactly this shape, so the SDK
raises the same exception classes (``BadRequest``, ``NotFound``...) it raises in the cloud.
"""

from __future__ import annotations

from typing import Any

# canonical code name → (HTTP status, google.rpc.Code number)
CODES: dict[str, tuple[int, int]] = {
    "INVALID_ARGUMENT": (400, 3),
    "FAILED_PRECONDITION": (400, 9),
    "OUT_OF_RANGE": (400, 11),
    "UNAUTHENTICATED": (401, 16),
    "PERMISSION_DENIED": (403, 7),
    "NOT_FOUND": (404, 5),
    "ALREADY_EXISTS": (409, 6),
    "ABORTED": (409, 10),
    "RESOURCE_EXHAUSTED": (429, 8),
    "CANCELLED": (499, 1),
    "INTERNAL": (500, 13),
    "UNIMPLEMENTED": (501, 12),
    "UNAVAILABLE": (503, 14),
    "DEADLINE_EXCEEDED": (504, 4),
}


class ApiError(Exception):
    """An error the local servers answer with; ``status`` is a canonical code name."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        if status not in CODES:
            raise ValueError(f"unknown canonical code {status!r}")
        self.status = status
        self.message = message

    @property
    def http_status(self) -> int:
        return CODES[self.status][0]

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message)

    def rpc_status(self) -> dict[str, Any]:
        """The ``google.rpc.Status`` of a failed long-running operation."""
        return {"code": CODES[self.status][1], "message": self.message}


def error_body(status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": CODES[status][0], "message": message, "status": status}}


def invalid(message: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message)


def not_found(resource: str) -> ApiError:
    return ApiError("NOT_FOUND", f"{resource} not found.")


def precondition(message: str) -> ApiError:
    return ApiError("FAILED_PRECONDITION", message)
