"""The eval set: JSON Lines, one case a line, read strictly with line numbers.

    {"prompt": "...", "reference": "...", "expect": "REGEX", "tags": ["geo"]}
    {"messages": [{"role": "user", "content": "..."}], "json_schema": {...}, "max_tokens": 64}

Fields: exactly one of ``prompt`` (a non-empty string) or ``messages`` (a non-empty list of
{"role", "content"} strings); optional ``name``, ``reference`` (a string the answer must
equal, exactly or once normalised), ``expect`` (a regex searched in the answer),
``json_schema`` (the answer must be JSON fitting it: the subset in ``schema.py``),
``tags`` (strings, for per-tag results) and ``max_tokens`` (1 to 4096).

The bounds are smoke-test's golden file's (``components/user_input.py``): the file's
size, each line's size and the line count are checked before parsing; ``expect`` is
compiled only when its counted repeats stay small and is searched with a time limit.
Like a bad golden file, a bad eval set is a usage error (exit 2) naming the file and the
line, raised before a single request is sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components import user_input
from tune2serve.components.errors import UsageError
from tune2serve.components.quality_gate import schema

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS = 4096
MAX_TAGS = 32
FIELDS = ("name", "prompt", "messages", "reference", "expect", "json_schema", "tags", "max_tokens")


@dataclass(frozen=True)
class EvalCase:
    """One case of the eval set; ``line`` is where it was read (for messages)."""

    name: str
    messages: tuple[dict[str, str], ...]
    line: int = 0
    prompt: str | None = None  # as given, when the case gave a prompt rather than messages
    reference: str | None = None
    expect: str | None = None
    json_schema: dict[str, Any] | None = None
    tags: tuple[str, ...] = ()
    max_tokens: int = DEFAULT_MAX_TOKENS
    pattern: user_input.Pattern | None = field(default=None, compare=False, repr=False)

    def question(self) -> str:
        """The conversation as one text (what the judge is shown)."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)

    def as_input(self) -> dict[str, Any]:
        """The case's input as the eval set gave it (``prompt`` or ``messages``), for --json."""
        return {"prompt": self.prompt} if self.prompt is not None else {"messages": [dict(m) for m in self.messages]}


@dataclass(frozen=True)
class EvalSet:
    source: str
    cases: tuple[EvalCase, ...]
    sha256: str  # of the file's bytes: what the promotion record names

    @property
    def tags(self) -> list[str]:
        return sorted({t for c in self.cases for t in c.tags})


def _messages(doc: dict[str, Any], where: str) -> tuple[tuple[dict[str, str], ...], str | None]:
    if ("prompt" in doc) == ("messages" in doc):
        raise UsageError(f"{where}: give exactly one of \"prompt\" (a string) or \"messages\" (a list)")
    if "prompt" in doc:
        if not isinstance(doc["prompt"], str) or not doc["prompt"].strip():
            raise UsageError(f"{where}: \"prompt\" must be a non-empty string")
        return ({"role": "user", "content": doc["prompt"]},), doc["prompt"]
    raw = doc["messages"]
    if not isinstance(raw, list) or not raw or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in raw):
        raise UsageError(f"{where}: \"messages\" must be a non-empty list of {{\"role\": str, \"content\": str}} objects")
    return tuple({"role": m["role"], "content": m["content"]} for m in raw), None


def _optional_text(doc: dict[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{where}: \"{key}\" must be a string, got {type(value).__name__}")
    return value


def _tags(doc: dict[str, Any], where: str) -> tuple[str, ...]:
    tags = doc.get("tags", [])
    if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(isinstance(t, str) and t.strip() for t in tags):
        raise UsageError(f"{where}: \"tags\" must be a list of at most {MAX_TAGS} non-empty strings")
    return tuple(dict.fromkeys(t.strip() for t in tags))


def _case(doc: Any, where: str, lineno: int, index: int) -> EvalCase:
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - set(FIELDS)
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: prompt or messages, "
                         "name, reference, expect, json_schema, tags, max_tokens")
    messages, prompt = _messages(doc, where)
    expect = _optional_text(doc, "expect", where)
    pattern = None
    if expect is not None:
        try:
            pattern = user_input.compile_pattern(expect)
        except user_input.BadPattern as e:
            raise UsageError(f"{where}: \"expect\" {e}") from None
    json_schema = doc.get("json_schema")
    if json_schema is not None:
        problem = schema.schema_problem(json_schema)
        if problem:
            raise UsageError(f"{where}: \"json_schema\" {problem}")
    max_tokens = doc.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_TOKENS:
        raise UsageError(f"{where}: \"max_tokens\" must be an integer from 1 to {MAX_TOKENS}")
    name = _optional_text(doc, "name", where) or f"case-{index}"
    return EvalCase(name, messages, lineno, prompt, _optional_text(doc, "reference", where), expect, json_schema,
                    _tags(doc, where), max_tokens, pattern)


def parse_eval_set(text: str, source: str) -> EvalSet:
    """The cases of JSON Lines ``text`` (blank lines and ``#`` comments skipped), within
    ``user_input.jsonl_records``' bounds. ``UsageError`` naming ``source`` and the line for
    anything malformed or too large, and for a set with no case or two cases of one name."""
    cases = [_case(doc, f"{source}, line {lineno}", lineno, index)
             for index, (lineno, doc) in enumerate(user_input.jsonl_records(text, source), start=1)]
    if not cases:
        raise UsageError(f"{source}: no case in the eval set (one JSON object a line)", file=source)
    seen: dict[str, int] = {}
    for case in cases:
        if case.name in seen:
            raise UsageError(f"{source}, line {case.line}: the name {case.name!r} is used already on line "
                             f"{seen[case.name]}; case names must be unique", file=source)
        seen[case.name] = case.line
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return EvalSet(source, tuple(cases), digest)


def read_eval_set(path: str, what: str = "--eval-set") -> EvalSet:
    """The eval set in file ``path``, size-checked before it is read (exit 2 when missing)."""
    return parse_eval_set(user_input.read_text_file(path, what), path)


__all__ = ["DEFAULT_MAX_TOKENS", "EvalCase", "EvalSet", "parse_eval_set", "read_eval_set"]
