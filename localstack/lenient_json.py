"""Request JSON read as Google's REST front end reads it, before the proto types see it.

Vertex AI's REST surface is JSON transcoded to protobuf by Google's front end, whose JSON
reader is protobuf's C++ stream parser (``google/protobuf/util/internal/
json_stream_parser.cc``). It is more lenient than JSON (RFC 8259), and the docs' own
``:deploy`` curl bodies rely on it (a trailing comma after ``"model_user_id": …``).
What it accepts beyond JSON, read from that parser and reproduced here exactly:

- a trailing comma before ``}`` or ``]`` (``{"a": 1,}``, ``[1,]``) — but not a leading or
  doubled one (``{,}``, ``[,]``, ``[1,,2]``);
- strings in single quotes as well as double quotes (``'abc'``; the other quote is then
  an ordinary character), raw control characters inside strings, ``\\v`` and any other
  escaped character standing for itself (``\\'`` → ``'``, ``\\q`` → ``q``);
- unquoted object keys made of ``[A-Za-z_$][A-Za-z0-9_$]*`` — except keys that begin with
  ``true``, ``false`` or ``null`` (the parser takes those for the literal and refuses);
- numbers as C's ``strtod`` reads the characters ``0-9 . e E + - x`` (``1.``, ``1.e3``,
  ``0x1e``), integers beyond 64 bits read as doubles; a leading ``0`` before more digits
  (``01``, ``-01``, ``0x10``) is refused, as is a double beyond the range (``1e400``).

Everything else is refused with the parser's own message and a caret under the place,
as the front end answers (``400 INVALID_ARGUMENT``, "Invalid JSON payload received.
…"). What comes out is canonical JSON text for the proto types' own strict parser
(``protos.parse``), which then judges field names and types as before. Nesting deeper
than ``MAX_DEPTH`` is refused (the proto JSON parser's own recursion limit).
"""

from __future__ import annotations

import json
import re

from tune2serve.localstack.errors import LenientJsonError

MAX_DEPTH = 100
_SPACE = " \t\n\v\f\r"
_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMBER_CHARS = re.compile(r"[0-9.eE+\-x]*")
# What C's strtod consumes whole from the characters above (decimal, or hex without 'p').
_STRTOD_DEC = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_STRTOD_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)")
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_UINT64_MAX = 2**64 - 1
_INT64_MIN = -(2**63)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # ------------------------------------------------------------------ helpers
    def fail(self, message: str) -> LenientJsonError:
        begin, end = max(self.pos - 20, 0), min(self.pos + 20, len(self.text))
        return LenientJsonError(f"{message}\n{self.text[begin:end]}\n{' ' * (self.pos - begin)}^")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _SPACE:
            self.pos += 1

    def peek(self) -> str:
        """The next token's kind, as the parser's ``GetNextTokenType`` decides it."""
        self.skip_space()
        rest = self.text[self.pos:self.pos + 5]
        if not rest:
            return "end"
        c = rest[0]
        if c in "\"'":
            return "string"
        if c == "-" or c.isdigit() and c.isascii():
            return "number"
        for literal in ("true", "false", "null"):
            if rest.startswith(literal):
                return literal
        if c in "{}[]:,":
            return c
        return "key" if _KEY.match(self.text, self.pos) else "unknown"

    # ------------------------------------------------------------------- values
    def value(self, depth: int) -> str:
        kind = self.peek()
        if kind == "end":
            raise self.fail("Unexpected end of string. Expected a value.")
        if kind == "{":
            return self.obj(depth + 1)
        if kind == "[":
            return self.array(depth + 1)
        if kind == "string":
            return json.dumps(self.string())
        if kind == "number":
            return self.number()
        if kind in ("true", "false", "null"):
            self.pos += len(kind)
            return kind
        if kind == "unknown":
            raise self.fail("Expected a value.")
        raise self.fail("Unexpected token.")

    def obj(self, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise self.fail(f"Message too deep. Max recursion depth reached ({MAX_DEPTH}).")
        self.pos += 1  # '{'
        items: list[str] = []
        while True:
            kind = self.peek()
            if kind == "}":  # an empty object, or a trailing comma
                self.pos += 1
                return "{" + ",".join(items) + "}"
            if kind == "string":
                key = self.string()
            elif kind == "key":
                match = _KEY.match(self.text, self.pos)
                assert match is not None
                key, self.pos = match.group(), match.end()
            elif kind == "end":
                raise self.fail("Unexpected end of string. Expected an object key or }.")
            else:
                raise self.fail("Expected an object key or }.")
            kind = self.peek()
            if kind != ":":
                raise self.fail("Unexpected end of string. Expected : between key:value pair." if kind == "end"
                                else "Expected : between key:value pair.")
            self.pos += 1
            items.append(f"{json.dumps(key)}:{self.value(depth)}")
            kind = self.peek()
            if kind == "}":
                continue
            if kind != ",":
                raise self.fail("Unexpected end of string. Expected , or } after key:value pair." if kind == "end"
                                else "Expected , or } after key:value pair.")
            self.pos += 1

    def array(self, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise self.fail(f"Message too deep. Max recursion depth reached ({MAX_DEPTH}).")
        self.pos += 1  # '['
        items: list[str] = []
        while True:
            kind = self.peek()
            if kind == "]":  # an empty array, or a trailing comma
                self.pos += 1
                return "[" + ",".join(items) + "]"
            if kind == "end":
                raise self.fail("Unexpected end of string. Expected a value or ] within an array.")
            items.append(self.value(depth))
            kind = self.peek()
            if kind == "]":
                continue
            if kind != ",":
                raise self.fail("Unexpected end of string. Expected , or ] after array value." if kind == "end"
                                else "Expected , or ] after array value.")
            self.pos += 1

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c == quote:
                self.pos += 1
                return "".join(out)
            if c != "\\":
                out.append(c)
                self.pos += 1
                continue
            if self.pos + 1 >= len(text):
                break
            nxt = text[self.pos + 1]
            if nxt == "u":
                out.append(self.unicode_escape())
                continue
            out.append(_SIMPLE_ESCAPES.get(nxt, nxt))
            self.pos += 2
        raise self.fail("Closing quote expected in string.")

    def _hex4(self, at: int) -> int:
        digits = self.text[at:at + 4]
        if len(digits) < 4:
            raise self.fail("Illegal hex string.")
        if not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise self.fail("Invalid escape sequence.")
        return int(digits, 16)

    def unicode_escape(self) -> str:
        code = self._hex4(self.pos + 2)
        if 0xD800 <= code <= 0xDBFF:
            if len(self.text) - self.pos < 12 or self.text[self.pos + 6:self.pos + 8] != "\\u":
                raise self.fail("Missing low surrogate.")
            low = self._hex4(self.pos + 8)
            if not 0xDC00 <= low <= 0xDFFF:
                raise self.fail("Invalid low surrogate.")
            code = ((code & 0x3FF) << 10 | (low & 0x3FF)) + 0x10000
            self.pos += 6
        elif 0xDC00 <= code <= 0xDFFF:
            raise self.fail("Invalid unicode code point.")
        self.pos += 6
        return chr(code)

    def number(self) -> str:
        match = _NUMBER_CHARS.match(self.text, self.pos)
        assert match is not None
        literal = match.group()
        if any(c in literal for c in ".eE"):
            return self._double(literal, match.end())
        negative = literal.startswith("-")
        if (not negative and len(literal) >= 2 and literal[0] == "0") or (negative and len(literal) >= 3
                                                                           and literal[1] == "0"):
            raise self.fail("Octal/hex numbers are not valid JSON values.")
        if re.fullmatch(r"-?\d+", literal):
            value = int(literal)
            if _INT64_MIN <= value <= _UINT64_MAX:
                self.pos = match.end()
                return str(value)
        return self._double(literal, match.end())

    def _double(self, literal: str, end: int) -> str:
        if _STRTOD_DEC.fullmatch(literal):
            value = float(literal)
        elif _STRTOD_HEX.fullmatch(literal):
            sign = -1.0 if literal.startswith("-") else 1.0
            value = sign * float.fromhex(literal.lstrip("+-"))
        else:
            raise self.fail("Unable to parse number.")
        if value in (float("inf"), float("-inf")):
            raise self.fail("Number exceeds the range of double.")
        self.pos = end
        return repr(value)


def canonical(text: str) -> str:
    """``text`` as Google's front end reads it, written back as strict JSON text.

    Raises:
        LenientJsonError: what the front end refuses, with its message and a caret.
    """
    parser = _Parser(text)
    out = parser.value(0)
    parser.skip_space()
    if parser.pos != len(text):
        raise parser.fail("Parsing terminated before end of input.")
    return out
