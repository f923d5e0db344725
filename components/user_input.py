"""What users hand tune2serve besides a checkpoint — golden prompts and eval sets as
JSON Lines, the regular expressions in them, fault patterns — read and matched under
bounds, by one helper.

Why: a regular expression is a program. ``re`` runs it with no time limit, so a golden
``"expect": "(a+)+$"`` against a long answer backtracks for hours and hangs the step;
even compiling can hang (``(?:a{65535}){65535}`` expands to billions of nodes). A JSON
Lines file is read whole and parsed line by line, so a 30 MB line or a 2 GB file stalls
the step before a single check runs. Here:

* ``compile_pattern`` refuses a pattern longer than ``MAX_PATTERN_CHARS`` or one whose
  counted repeats expand past ``MAX_EXPANSION`` nodes (measured on the text, before
  compiling), then compiles it with the ``regex`` package (``VERSION0``: ``re``'s
  syntax and meaning);
* ``search`` / ``fullmatch`` run it with ``timeout=`` (``PatternTimeout`` after
  ``MATCH_TIMEOUT_S``) — as export's adapter patterns are matched;
* ``read_text_file`` checks a file's size before reading it; ``jsonl_records`` checks
  the total size, each line's size and the line count before parsing, and parses each
  line with the bounded JSON reader (depth, number sizes, duplicate keys).

Every refusal names the file (and line) and says what to change. Callers choose the
error class: a golden file is a usage error (exit 2), a pattern that runs out of time
fails its check (exit 1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune2serve.components.errors import BadPattern, PatternTimeout, UsageError

MAX_PATTERN_CHARS = 4096
MAX_EXPANSION = 100_000  # compiling (?:a{1000}){1000} (10^6 nodes) takes ~0.5 s; 10^5, ~0.05 s
MATCH_TIMEOUT_S = 0.5  # real expectations match a few KB of answer in microseconds
MAX_JSONL_BYTES = 16 * 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024  # a long-context prompt of ~250k tokens
MAX_LINES = 100_000
MAX_JSON_DEPTH = 32


_COUNT = re.compile(r"\{(\d*)(?:,(\d*))?\}")
_BRACED_ESCAPE = re.compile(r"\\[pPNxuUg]\{[^}]*\}")


def expansion(pattern: str) -> int:
    """An upper estimate of the nodes compiling ``pattern`` makes: sequences add,
    a counted repeat ``{n}`` / ``{n,m}`` multiplies what it repeats by its largest count.
    Escapes and character classes count as one atom each."""
    stack = [0]
    last = 0  # the size of the last atom or group: what a quantifier applies to
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            braced = _BRACED_ESCAPE.match(pattern, i)
            i = braced.end() if braced else i + 2
            size = 1
        elif c == "[":
            j = i + 1 + (pattern[i + 1:i + 2] == "^")
            j += pattern[j:j + 1] == "]"
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i, size = j + 1, 1
        elif c == "(":
            stack.append(0)
            i += 1
            continue
        elif c == ")" and len(stack) > 1:
            size = stack.pop()
            i += 1
        elif c == "{" and (count := _COUNT.match(pattern, i)) and (count.group(1) or count.group(2)):
            times = max(int(n or 0) for n in count.groups())
            stack[-1] += last * (times - 1) if times else -last
            last *= times
            i = count.end()
            continue
        else:
            i, size = i + 1, 1
        stack[-1] += size
        last = size
    return max(sum(stack), 1)


@dataclass(frozen=True)
class Pattern:
    """A compiled user pattern; ``text`` is what the user wrote."""

    text: str
    compiled: Any

    def search(self, subject: str, timeout_s: float = MATCH_TIMEOUT_S) -> bool:
        """Whether the pattern occurs in ``subject``; ``PatternTimeout`` past ``timeout_s``."""
        return self._run(self.compiled.search, subject, timeout_s)

    def match(self, subject: str, timeout_s: float = MATCH_TIMEOUT_S) -> bool:
        """Whether the pattern matches at the start of ``subject`` (``re.match``)."""
        return self._run(self.compiled.match, subject, timeout_s)

    def _run(self, method: Any, subject: str, timeout_s: float) -> bool:
        try:
            return method(subject, timeout=timeout_s) is not None
        except TimeoutError as e:
            raise PatternTimeout(f"/{shown(self.text)}/ took more than {timeout_s:g} s to match a text of "
                                 f"{len(subject)} characters (catastrophic backtracking); write it without nested "
                                 "repeats such as (a+)+ or (.*)*") from e


def shown(text: str, limit: int = 80) -> str:
    """``text`` cut for a message, control characters escaped."""
    cut = text if len(text) <= limit else text[:limit] + "…"
    return cut.encode("unicode_escape").decode("ascii") if not cut.isprintable() else cut


def compile_pattern(text: object, *, template: str = "{}", max_chars: int = MAX_PATTERN_CHARS) -> Pattern:
    """``text`` compiled (inside ``template``, e.g. ``(.*\\.)?({})$``), or ``BadPattern``
    saying why: not a string, empty or longer than ``max_chars``, counted repeats that
    expand past ``MAX_EXPANSION``, not a regular expression."""
    import regex

    if not isinstance(text, str) or not text or len(text) > max_chars:
        raise BadPattern(f"must be a regular expression of 1 to {max_chars} characters; got "
                         f"{type(text).__name__ if not isinstance(text, str) else f'{len(text)} characters'}")
    full = template.format(text)
    if (nodes := expansion(full)) > MAX_EXPANSION:
        raise BadPattern(f"/{shown(text)}/ repeats to about {nodes} elements, above {MAX_EXPANSION}; compiling it "
                         "would take too long — use smaller counts such as {1,100}")
    try:
        return Pattern(text, regex.compile(full, flags=regex.VERSION0))
    except (regex.error, OverflowError, RecursionError, ValueError) as e:
        raise BadPattern(f"/{shown(text)}/ is not a valid regular expression: {e}") from e


def read_text_file(path: str | Path, what: str, *, max_bytes: int = MAX_JSONL_BYTES) -> str:
    """The UTF-8 text of a user's file, its size checked before a byte is read;
    ``UsageError`` naming ``what`` (e.g. ``--golden FILE``) and the problem."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if not file.is_file():
            raise UsageError(f"{what} {file}: not a regular file", file=str(file))
        if size > max_bytes:
            raise UsageError(f"{what} {file}: {size} bytes is above the {max_bytes}-byte limit for this file",
                             file=str(file))
        with file.open("rb") as fh:
            data = fh.read(max_bytes + 1)  # the file may have grown since stat
    except OSError as e:
        raise UsageError(f"{what} {file}: cannot read it ({e.strerror or e})", file=str(file)) from e
    if len(data) > max_bytes:
        raise UsageError(f"{what} {file}: more than {max_bytes} bytes, above the limit for this file", file=str(file))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what} {file}: not UTF-8 text ({e.reason} at byte {e.start})", file=str(file)) from e


def jsonl_records(text: str, source: str, *, max_bytes: int = MAX_JSONL_BYTES, max_line_bytes: int = MAX_LINE_BYTES,
                  max_lines: int = MAX_LINES) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each line of JSON Lines ``text`` that is not blank or a
    ``#`` comment. Lines end at ``\\n`` only (a JSON string may hold U+2028). Sizes are
    checked before parsing; each line is parsed by the bounded JSON reader. Every problem
    is a ``UsageError`` naming ``source`` and the line."""
    from tune2serve.components.checkpoint.bounded_json import JsonLimitError, loads

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise UsageError(f"{source}: {size} bytes is above the {max_bytes}-byte limit for a JSON Lines file",
                         file=source)
    lines = text.split("\n")
    if len(lines) > max_lines:
        raise UsageError(f"{source}: {len(lines)} lines, above the limit of {max_lines}", file=source)
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}, line {lineno}"
        if len(stripped) > max_line_bytes or len(stripped.encode("utf-8", "surrogatepass")) > max_line_bytes:
            raise UsageError(f"{where}: longer than {max_line_bytes} bytes, the limit for one line", file=source)
        try:
            yield lineno, loads(stripped, where, max_bytes=max_line_bytes, max_depth=MAX_JSON_DEPTH)
        except JsonLimitError as e:
            raise UsageError(f"{e}; each line must be one JSON object", file=source) from None


__all__ = ["BadPattern", "MATCH_TIMEOUT_S", "MAX_JSONL_BYTES", "MAX_LINE_BYTES", "MAX_PATTERN_CHARS", "Pattern",
           "PatternTimeout", "compile_pattern", "expansion", "jsonl_records", "read_text_file", "shown"]
