"""The four request kinds of a custom-weights endpoint (DESIGN.md §1), as pure
builders of bodies (the URLs are in components/vertex/dedicated_endpoint.py); and the
parsers of their answers, server-sent events included. No I/O here."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

KINDS = ("chat", "chat_stream", "predict", "stream_raw_predict")


def chat_body(messages: Iterable[dict[str, str]], *, model: str, max_tokens: int, stream: bool = False) -> dict[str, Any]:
    """Greedy (temperature 0, top_p 1) so answers are comparable run to run."""
    body: dict[str, Any] = {"model": model, "temperature": 0, "top_p": 1, "max_tokens": max_tokens,
                            "messages": [dict(m) for m in messages]}
    if stream:  # usage in the last chunk: vLLM sends it only when asked
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def predict_body(prompt: str, *, max_tokens: int, stream: bool = False) -> dict[str, Any]:
    instance: dict[str, Any] = {"prompt": prompt, "temperature": 0, "top_p": 1, "max_tokens": max_tokens}
    if stream:
        instance["stream"] = True
    return {"instances": [instance]}


def request_body(kind: str, messages: Iterable[dict[str, str]], prompt: str, *, model: str, max_tokens: int
                 ) -> dict[str, Any]:
    if kind == "chat":
        return chat_body(messages, model=model, max_tokens=max_tokens)
    if kind == "chat_stream":
        return chat_body(messages, model=model, max_tokens=max_tokens, stream=True)
    return predict_body(prompt, max_tokens=max_tokens, stream=kind == "stream_raw_predict")


def chat_answer(body: dict[str, Any]) -> str:
    """The text of a unary chat completion."""
    choices = body.get("choices") or []
    if not choices:
        raise ValueError("the answer has no choices")
    message = choices[0].get("message") or {}
    return str(message.get("content") or choices[0].get("text") or "")


def usage_tokens(body: dict[str, Any]) -> int | None:
    """``usage.completion_tokens``, or None when absent or not a count."""
    usage = body.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


def predict_answer(body: dict[str, Any]) -> str:
    """The text of a :predict answer: ``predictions[0]`` is a string (vLLM) or an object
    with the text or a completion in it."""
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or not predictions:
        raise ValueError("the answer has no predictions")
    return _text_of(predictions[0])


def _text_of(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if item.get("choices"):
            choice = item["choices"][0]
            return str((choice.get("delta") or {}).get("content") or (choice.get("message") or {}).get("content")
                       or choice.get("text") or "")
        for key in ("content", "text", "output", "generated_text"):
            if isinstance(item.get(key), str):
                return str(item[key])
        if isinstance(item.get("predictions"), list) and item["predictions"]:
            return _text_of(item["predictions"][0])
    return ""


@dataclass(frozen=True)
class StreamEvent:
    data: str

    @property
    def done(self) -> bool:
        return self.data.strip() == "[DONE]"


def iter_sse_events(lines: Iterable[str]) -> Iterator[StreamEvent]:
    """Server-sent events as they arrive: ``data:`` lines, joined until a blank line.
    Lines that are bare JSON (some servers stream JSON Lines) count as one event each.
    Lazy, so a reader can time each event (time to first token)."""
    buffer: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if buffer:
                yield StreamEvent("\n".join(buffer))
                buffer = []
            continue
        if line.startswith(":"):
            continue
        if line.startswith("data:"):
            buffer.append(line[5:].lstrip(" "))
        elif line.lstrip().startswith(("{", "[")) and not buffer:
            yield StreamEvent(line.strip())
    if buffer:
        yield StreamEvent("\n".join(buffer))


def parse_sse_lines(lines: Iterable[str]) -> list[StreamEvent]:
    """Every server-sent event of ``lines`` (``iter_sse_events``, all at once)."""
    return list(iter_sse_events(lines))


def finish_reason(doc: Any) -> str | None:
    """``choices[0].finish_reason`` of a chat completion or of a streamed chunk (None
    while a stream runs, or when the server does not say)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list) or not doc["choices"]:
        return None
    choice = doc["choices"][0]
    reason = choice.get("finish_reason") if isinstance(choice, dict) else None
    return reason if isinstance(reason, str) and reason else None


def stream_chunk_end(event: StreamEvent) -> tuple[str | None, int | None]:
    """(finish_reason, completion tokens) that a streamed chunk reports, each None when
    it does not (the last chunks carry them: vLLM sends usage only when asked with
    ``stream_options.include_usage``). A chunk that is not JSON reports nothing here;
    ``stream_chunk_text`` says what is wrong with it."""
    if event.done:
        return None, None
    try:
        doc = json.loads(event.data)
    except json.JSONDecodeError:
        return None, None
    return finish_reason(doc), usage_tokens(doc) if isinstance(doc, dict) else None


def stream_chunk_text(event: StreamEvent) -> str:
    """The text one streamed chunk adds (empty for role-only chunks or [DONE])."""
    if event.done:
        return ""
    try:
        doc = json.loads(event.data)
    except json.JSONDecodeError as e:
        raise ValueError(f"a streamed chunk is not JSON: {event.data[:200]!r}") from e
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        raise ValueError(f"the stream carried an error: {doc['error'].get('message', doc['error'])}")
    return _text_of(doc)
