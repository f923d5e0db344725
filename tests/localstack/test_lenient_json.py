"""The local Vertex server reads request JSON as Google's front end does (protobuf's C++
JSON stream parser): generated documents written in every form that parser accepts read
back as the same value; generated defects it refuses are refused, naming the place."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tune2serve.localstack import protos
from tune2serve.localstack.api_errors import ApiError
from tune2serve.localstack.lenient_json import MAX_DEPTH, LenientJsonError, canonical

BARE_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
SPACE = st.text(alphabet=" \t\n\r\v\f", max_size=3)

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                         st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@st.composite
def lenient_text(draw: st.DrawFn, value: Any) -> str:
    """``value`` written with the liberties the stream parser takes: any quote, bare
    keys, trailing commas, raw control characters, escapes of ordinary characters."""
    pad = draw(SPACE)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            bare = BARE_KEY.match(key) and not key.startswith(("true", "false", "null")) and draw(st.booleans())
            items.append(f"{pad}{key if bare else draw(quoted(key))}{draw(SPACE)}:{draw(lenient_text(item))}")
        trailing = "," if items and draw(st.booleans()) else ""
        return "{" + ",".join(items) + trailing + draw(SPACE) + "}"
    if isinstance(value, list):
        items = [draw(lenient_text(item)) for item in value]
        trailing = "," if items and draw(st.booleans()) else ""
        return pad + "[" + ",".join(items) + trailing + draw(SPACE) + "]"
    if isinstance(value, str):
        return pad + draw(quoted(value))
    return pad + json.dumps(value)


@st.composite
def quoted(draw: st.DrawFn, text: str) -> str:
    quote = draw(st.sampled_from(["'", '"']))
    out = []
    for ch in text:
        if ch in (quote, "\\"):
            out.append("\\" + ch)
        elif ch.isalpha() and ch.isascii() and ch not in "bfnrtvu" and draw(st.integers(0, 9)) == 0:
            out.append("\\" + ch)  # an escaped ordinary letter stands for itself
        else:
            out.append(ch)  # control characters included: the parser takes them raw
    return quote + "".join(out) + quote


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_strict_json_reads_back_unchanged(value: Any) -> None:
    assert _same(json.loads(canonical(json.dumps(value))), value)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), documents)
def test_every_lenient_form_reads_back_as_the_same_value(data: st.DataObject, value: Any) -> None:
    text = data.draw(lenient_text(value))
    assert _same(json.loads(canonical(text)), value), text


DEFECTS = [  # (document, the parser's message), each refused as the front end refuses it
    ("{,}", "Expected an object key or }."),
    ("[,]", "Unexpected token."),
    ('{"a": 1,, "b": 2}', "Expected an object key or }."),
    ("[1,,2]", "Unexpected token."),
    ('{"a" 1}', "Expected : between key:value pair."),
    ('{"a": 1 "b": 2}', "Expected , or } after key:value pair."),
    ("[1 2]", "Expected , or ] after array value."),
    ('{"a": x}', "Unexpected token."),
    ("{trueValue: 1}", "Expected an object key or }."),
    ('{"a": 01}', "Octal/hex numbers are not valid JSON values."),
    ('{"a": -01}', "Octal/hex numbers are not valid JSON values."),
    ('{"a": 1e400}', "Number exceeds the range of double."),
    ('{"a": 1.5e}', "Unable to parse number."),
    ('{"a": "abc}', "Closing quote expected in string."),
    ('{"a": "\\ud800"}', "Missing low surrogate."),
    ('{"a": "\\udc00"}', "Invalid unicode code point."),
    ('{"a": "\\u12g4"}', "Invalid escape sequence."),
    ('{"a": 1} x', "Parsing terminated before end of input."),
    ('{"a": 1 // c\n}', "Expected , or } after key:value pair."),
    ('{"a": [1, 2}', "Expected , or ] after array value."),
]


@pytest.mark.parametrize(("text", "message"), DEFECTS)
def test_what_the_parser_refuses_is_refused_with_its_message_and_a_caret(text: str, message: str) -> None:
    with pytest.raises(LenientJsonError) as err:
        canonical(text)
    first, rest = str(err.value).split("\n", 1)
    context, caret = rest.rsplit("\n", 1)
    assert first == message
    assert caret.endswith("^") and set(caret[:-1]) <= {" "}
    assert context in text


@settings(max_examples=200)
@given(st.data(), documents.filter(lambda v: isinstance(v, (dict, list)) and len(v) > 0))
def test_a_doubled_comma_anywhere_is_refused(data: st.DataObject, value: Any) -> None:
    text = json.dumps(value)
    commas = [i for i, c in enumerate(text) if c == "," and _outside_strings(text, i)]
    if not commas:
        text = text[:-1] + ",," + text[-1]  # "[1,,]" / '{"a":1,,}'
    else:
        at = data.draw(st.sampled_from(commas))
        text = text[:at] + ",," + text[at + 1:]
    with pytest.raises(LenientJsonError):
        canonical(text)


def _outside_strings(text: str, index: int) -> bool:
    inside, escaped = False, False
    for ch in text[:index]:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            inside = not inside
    return not inside


def test_nesting_is_bounded_instead_of_exhausting_the_stack() -> None:
    assert json.loads(canonical("[" * MAX_DEPTH + "]" * MAX_DEPTH)) is not None
    with pytest.raises(LenientJsonError, match="Max recursion depth"):
        canonical("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(LenientJsonError, match="Max recursion depth"):
        canonical('{"a":' * 50_000 + "1" + "}" * 50_000)


# The Korean edition of "deploy models with custom weights": its first :deploy body, as
# the page prints it (the shell quotes resolved): trailing commas after model_user_id and
# after model_config. Vertex accepts it; so does the local server.
DOCS_DEPLOY_BODY = """{
    "custom_model": {
    "gcs_uri": "gs://b/model"
  },
  "destination": "projects/p/locations/us-central1",
  "model_config": {
     "model_user_id": "my-model",
  },
}"""


def test_the_docs_deploy_body_with_trailing_commas_parses_as_a_deploy_request() -> None:
    request = protos.parse("v1beta1", "DeployRequest", DOCS_DEPLOY_BODY.encode())
    assert (request.custom_model.gcs_uri, request.model_config.model_user_id) == ("gs://b/model", "my-model")
    bare = protos.parse("v1beta1", "DeployRequest", b"{custom_model: {gcs_uri: 'gs://b/m'}, destination: 'x',}")
    assert (bare.custom_model.gcs_uri, bare.destination) == ("gs://b/m", "x")


@pytest.mark.parametrize(("body", "message"), [
    (b'{"custom_model": {"gcs_uri": "gs://b/m"},, }', "Invalid JSON payload received. Expected an object key or }."),
    (b'{"custom_modl": {}}', "Invalid JSON payload received."),  # the types still judge the names
    (b"{'destination': 'x', unknownField: 1}", "Invalid JSON payload received."),
    (b'{"destination": "\xff"}', "Invalid JSON payload received. Not UTF-8"),
])
def test_a_request_the_front_end_refuses_is_400_invalid_argument(body: bytes, message: str) -> None:
    with pytest.raises(ApiError) as err:
        protos.parse("v1beta1", "DeployRequest", body)
    assert (err.value.status, err.value.http_status) == ("INVALID_ARGUMENT", 400)
    assert err.value.message.startswith(message)
