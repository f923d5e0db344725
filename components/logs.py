"""Structured logging for operators reading Cloud Logging.

One line per event. On a terminal the line is human text; otherwise it is one JSON
object with ``severity`` (the field Cloud Logging reads), ``message``, ``event`` and the
event's fields (resource names included). Values that look like secrets are redacted
before anything is written, so a token passed by mistake never reaches a log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

from tune2serve.components.checkpoint.secrets import redact as redact_text  # the one set of secret shapes

# Keys whose values are secrets: ``token``/``*_token`` (access_token, hf_token) but not
# ``max_tokens`` or ``time_to_first_token_s``, which are figures operators need.
_SECRET_KEY = re.compile(
    r"(^|[_-])(token|secret|password|passwd|authorization|api[_-]?key|private[_-]?key|credentials?)$", re.I
)
_SECRET_VALUE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+|ya29\.[A-Za-z0-9._-]+|hf_[A-Za-z0-9]{20,}")

_LOGGER_NAME = "tune2serve"


def redact(value: Any, key: str | None = None) -> Any:
    """Replaces secret-looking values (by key name or by shape) with ``"[redacted]"``."""
    if key is not None and _SECRET_KEY.search(key) and value not in (None, ""):
        return "[redacted]"
    if isinstance(value, str):
        # and the shapes checkpoint files are scrubbed of (URL userinfo, hf_, AIza, ghp_, private keys...)
        return redact_text(_SECRET_VALUE.sub(lambda m: (m.group(1) or "") + "[redacted]", value))
    if isinstance(value, dict):
        return {redact_text(str(k)) if isinstance(k, str) else k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = redact(getattr(record, "fields", {}))
        message = redact(record.getMessage())
        if self.as_json:
            payload = {
                "severity": record.levelname,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "logger": record.name,
                "event": getattr(record, "event", record.name),
                "message": message,
                **fields,
            }
            return json.dumps(payload, default=str, separators=(",", ":"))
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{record.levelname.lower():7s} {message}" + (f"  [{extra}]" if extra else "")


def configure(stream: Any = None, level: str | None = None) -> None:
    """Installs the handler once; JSON unless the stream is a terminal."""
    stream = stream or sys.stderr
    logger = logging.getLogger(_LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    as_json = os.environ.get("TUNE2SERVE_LOG_FORMAT", "").lower() == "json" or not (
        hasattr(stream, "isatty") and stream.isatty()
    )
    if os.environ.get("TUNE2SERVE_LOG_FORMAT", "").lower() == "text":
        as_json = False
    handler.setFormatter(_Formatter(as_json))
    logger.addHandler(handler)
    logger.setLevel(level or os.environ.get("TUNE2SERVE_LOG_LEVEL", "INFO"))
    logger.propagate = False
    _route_sdk_logs(stream, _Formatter(as_json))


# The Vertex AI SDK's loggers. The SDK gives each of its loggers a handler of its own on
# *stdout* unless a StreamHandler is already found above it, and stdout belongs to
# ``--json``: a handler of ours on these parents (installed before the SDK is first
# imported, which ``configure`` at a command's start is) writes its warnings and errors
# to stderr, redacted, in our format — set through the logging API, the SDK's own
# handlers never touched.
_SDK_LOGGERS = ("google.cloud.aiplatform", "vertexai")
_sdk_handlers: list[tuple[logging.Logger, logging.Handler]] = []


def _route_sdk_logs(stream: Any, formatter: logging.Formatter) -> None:
    for logger, old in _sdk_handlers:
        logger.removeHandler(old)
    _sdk_handlers.clear()
    for name in _SDK_LOGGERS:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.setLevel(logging.WARNING)
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        _sdk_handlers.append((logger, handler))


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{_LOGGER_NAME}.{name}")


def log_event(logger: logging.Logger, event: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Writes one structured event line: ``event`` names it, ``fields`` carry resource names."""
    logger.log(level, message, extra={"event": event, "fields": fields})
