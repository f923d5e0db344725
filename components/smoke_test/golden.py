"""Golden prompts: JSON Lines, one case a line, parsed strictly with line numbers.

    {"prompt": "...", "expect": "REGEX"}
    {"messages": [{"role": "user", "content": "..."}], "expect": "REGEX"}

Optional per case: ``"expect_substring"`` (a literal, for answers full of regex
metacharacters), ``"name"``, ``"max_tokens"``. A case with no expectation only has to
answer with some text. ``expect`` is searched (``re.search``), not matched whole, so a
model that adds a trailing word still passes.

Bounds (``components/user_input.py``, shared with every user file and pattern): the
text's size, each line's size and the line count are checked before parsing, each line
through the bounded JSON reader; ``expect`` is compiled only when its counted repeats
stay small and is searched with a time limit — a pattern that backtracks catastrophically
fails its check, saying so, instead of hanging the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tune2serve.components import user_input
from tune2serve.components.errors import UsageError

DEFAULT_MAX_TOKENS = 16

# Used when no golden file is given: every request kind still has to answer.
SANITY_CASES_JSONL = '{"name": "sanity", "prompt": "hello"}\n'


@dataclass(frozen=True)
class GoldenCase:
    name: str
    messages: tuple[dict[str, str], ...]
    expect: str | None = None
    expect_substring: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    pattern: user_input.Pattern | None = field(default=None, compare=False, repr=False)  # ``expect``, compiled

    @property
    def prompt(self) -> str:
        """The last user message: what the raw-text request kinds (:predict) send."""
        return next((m["content"] for m in reversed(self.messages) if m.get("role") == "user"), "")

    def check(self, answer: str) -> str | None:
        """None when ``answer`` meets the expectations, else what was expected."""
        if self.expect is not None:
            pattern = self.pattern or user_input.compile_pattern(self.expect)
            try:
                if not pattern.search(answer):
                    return f"expected a match for /{self.expect}/"
            except user_input.PatternTimeout as e:
                return f"the \"expect\" pattern {e}"
        if self.expect_substring is not None and self.expect_substring not in answer:
            return f"expected the text {self.expect_substring!r}"
        if not answer.strip():
            return "expected a non-empty answer"
        return None


def _case(doc: Any, where: str, index: int) -> GoldenCase:
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - {"name", "prompt", "messages", "expect", "expect_substring", "max_tokens"}
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: prompt or messages, "
                         "expect, expect_substring, name, max_tokens")
    if ("prompt" in doc) == ("messages" in doc):
        raise UsageError(f"{where}: give exactly one of \"prompt\" (a string) or \"messages\" (a list)")
    if "prompt" in doc:
        if not isinstance(doc["prompt"], str) or not doc["prompt"]:
            raise UsageError(f"{where}: \"prompt\" must be a non-empty string")
        messages: tuple[dict[str, str], ...] = ({"role": "user", "content": doc["prompt"]},)
    else:
        raw = doc["messages"]
        if not isinstance(raw, list) or not raw or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in raw):
            raise UsageError(f"{where}: \"messages\" must be a non-empty list of "
                             "{\"role\": str, \"content\": str} objects")
        messages = tuple({"role": m["role"], "content": m["content"]} for m in raw)
    expect = doc.get("expect")
    pattern = None
    if expect is not None:
        try:
            pattern = user_input.compile_pattern(expect)
        except user_input.BadPattern as e:
            raise UsageError(f"{where}: \"expect\" {e}") from None
    substring = doc.get("expect_substring")
    if substring is not None and not isinstance(substring, str):
        raise UsageError(f"{where}: \"expect_substring\" must be a string")
    max_tokens = doc.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 4096:
        raise UsageError(f"{where}: \"max_tokens\" must be an integer from 1 to 4096")
    name = str(doc.get("name") or f"case-{index}")
    return GoldenCase(name, messages, expect, substring, max_tokens, pattern)


def parse_golden(text: str, source: str = "golden prompts") -> list[GoldenCase]:
    """Parses JSON Lines (blank lines and ``#`` comments skipped), within the bounds of
    ``user_input.jsonl_records``. Raises UsageError naming the source and line for
    anything malformed or too large."""
    return [_case(doc, f"{source}, line {lineno}", index)
            for index, (lineno, doc) in enumerate(user_input.jsonl_records(text, source), start=1)]


def load_golden(text_or_empty: str, source: str = "golden prompts") -> list[GoldenCase]:
    """The golden cases, or the built-in sanity prompt when none are given."""
    cases = parse_golden(text_or_empty, source) if text_or_empty.strip() else []
    return cases or parse_golden(SANITY_CASES_JSONL, "built-in sanity prompts")
