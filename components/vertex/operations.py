"""Waiting on Vertex AI long-running operations: name written down first, then polled
with exponential backoff under a deadline, with a progress line per poll.

Why not ``operation.result(timeout=...)``: it polls on a fixed schedule, logs nothing an
operator can follow, and a caller that dies while waiting leaves no trace of which
operation was running. Here the operation name is logged (and handed to ``on_started``,
which may write it to a file or artifact) before the first poll, so a rerun or an
operator can find it; a failed operation becomes ``OperationFailedError`` carrying
Vertex's own message; a deadline cancels the operation (best effort) and says so.

Works on any ``google.api_core.operation.Operation`` future (what GAPIC clients return
for LROs, gRPC or REST transport alike).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tune2serve.components.errors import OperationFailedError, VertexUnavailableError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.vertex.retry import DEFAULT_POLL, PollPolicy

_log = get_logger("vertex.operations")


def operation_name(operation: Any) -> str:
    """The ``projects/.../operations/ID`` name of an api_core Operation future."""
    return str(getattr(getattr(operation, "operation", None), "name", "") or "")


def _operation_error_message(operation: Any) -> tuple[str, int | None]:
    proto = getattr(operation, "operation", None)
    error = getattr(proto, "error", None)
    message = str(getattr(error, "message", "") or "").strip()
    code = getattr(error, "code", None)
    if not message:
        exc = operation.exception(timeout=0) if hasattr(operation, "exception") else None
        message = str(getattr(exc, "message", "") or exc or "no error message")
    return message, int(code) if isinstance(code, int) and code else None


def wait_for_operation(
    operation: Any,
    *,
    what: str,
    deadline_s: float,
    policy: PollPolicy = DEFAULT_POLL,
    on_started: Callable[[str], None] | None = None,
    cancel_on_deadline: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Waits for ``operation`` and returns its result.

    Raises:
        OperationFailedError: the operation ended in error (Vertex's message included),
            or did not finish within ``deadline_s`` (then it was asked to cancel).
    """
    name = operation_name(operation)
    log_event(_log, "operation.started", f"{what}: waiting on operation {name}", operation=name, what=what)
    if on_started is not None:
        on_started(name)
    started = clock()
    for interval in policy.intervals():
        try:
            done = bool(operation.done())
        except Exception as e:  # a poll that fails is not the operation failing
            from tune2serve.components.vertex.errors import translate_api_error

            err = translate_api_error(e, resource_name=name)
            if not isinstance(err, VertexUnavailableError):
                raise err from e
            log_event(_log, "operation.poll_failed", f"{what}: polling {name} failed ({err}); will poll again",
                      logging.WARNING, operation=name)
            done = False
        elapsed = clock() - started
        if done:
            return _finish(operation, what=what, name=name, elapsed=elapsed)
        if elapsed + interval > deadline_s:
            if cancel_on_deadline:
                try:
                    operation.cancel()
                except Exception as e:  # best effort: the message below says what to do
                    log_event(_log, "operation.cancel_failed", f"{what}: cancelling {name} failed: {e}",
                              logging.WARNING, operation=name)
            raise OperationFailedError(
                f"{what}: operation {name} did not finish within {deadline_s:.0f} s"
                + (" and was asked to cancel" if cancel_on_deadline else "")
                + "; raise the timeout (--deploy-timeout) or check the operation in the Cloud console",
                operation_name=name,
            )
        log_event(_log, "operation.progress", f"{what}: still running after {elapsed:.0f} s",
                  operation=name, elapsed_s=round(elapsed, 1))
        sleep(interval)
    raise AssertionError("unreachable")


def _finish(operation: Any, *, what: str, name: str, elapsed: float) -> Any:
    proto = getattr(operation, "operation", None)
    if proto is not None and proto.HasField("error"):
        message, code = _operation_error_message(operation)
        log_event(_log, "operation.failed", f"{what}: operation {name} failed: {message}",
                  logging.ERROR, operation=name, elapsed_s=round(elapsed, 1))
        raise OperationFailedError(f"{what} failed: Vertex AI says: {message} (operation {name})",
                                   operation_name=name, status_code=code)
    log_event(_log, "operation.done", f"{what}: operation {name} finished in {elapsed:.0f} s",
              operation=name, elapsed_s=round(elapsed, 1))
    return operation.result(timeout=0)
