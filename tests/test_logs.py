"""Structured logs: one JSON line per event, secrets never written."""

from __future__ import annotations

import io
import json
import logging

from tune2serve.components import logs


def test_json_line_per_event_with_resource_names() -> None:
    stream = io.StringIO()
    logs.configure(stream)
    logs.log_event(logs.get_logger("t"), "deploy.started", "deploying",
                   endpoint="projects/p/locations/l/endpoints/1")
    line = json.loads(stream.getvalue().strip())
    assert line["severity"] == "INFO" and line["event"] == "deploy.started"
    assert line["endpoint"] == "projects/p/locations/l/endpoints/1"


def test_secrets_are_redacted_by_key_and_by_shape() -> None:
    stream = io.StringIO()
    logs.configure(stream)
    logs.log_event(logs.get_logger("t"), "x", "header Authorization: Bearer ya29.SECRETSECRET", logging.WARNING,
                   access_token="ya29.abc", hf_token="hf_" + "a" * 30, max_tokens=154,
                   time_to_first_token_s=0.1, note="token hf_" + "b" * 30)
    text = stream.getvalue()
    assert "SECRET" not in text and "ya29.abc" not in text and "a" * 30 not in text and "b" * 30 not in text
    line = json.loads(text)
    assert line["access_token"] == "[redacted]" and line["hf_token"] == "[redacted]"
    assert line["max_tokens"] == 154 and line["time_to_first_token_s"] == 0.1
