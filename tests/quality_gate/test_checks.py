"""The deterministic checks of one answer, and the JSON Schema subset they use: what
fails, with what message, and generated answers and documents that never crash them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.quality_gate import schema
from tune2serve.components.quality_gate.checks import TEMPLATE_TOKENS, Answer, check_answer, failed, normalised
from tune2serve.components.quality_gate.evalset import parse_eval_set

JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False,
                    allow_infinity=False) | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=15)


def case(**fields: object):  # type: ignore[no-untyped-def]
    return parse_eval_set(json.dumps({"prompt": "q", **fields}) + "\n", "set.jsonl").cases[0]


def names(results) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.name for r in failed(results)]


def test_a_good_answer_passes_everything_it_is_asked() -> None:
    c = case(expect=r"\bparis\b", reference="The capital is Paris.",
             json_schema=None)
    results = check_answer(c, Answer("the capital is paris", "stop"))
    assert [r.name for r in results] == ["answered", "not_empty", "stopped", "no_template_tokens", "expect",
                                         "reference"]
    assert not failed(results)


@pytest.mark.parametrize(("answer", "failing"), [
    (Answer(error="503 Service Unavailable"), ["answered"]),
    (Answer("   ", "stop"), ["not_empty", "expect", "reference"]),
    (Answer("paris paris paris", "length"), ["stopped", "reference"]),
    (Answer("paris", None), ["stopped"]),
    (Answer("paris<|im_end|>", "stop"), ["no_template_tokens", "reference"]),
    (Answer("Paris.", "stop"), []),
])
def test_each_check_fails_on_its_own(answer: Answer, failing: list[str]) -> None:
    results = check_answer(case(expect="(?i)paris", reference="paris"), answer)
    assert names(results) == failing
    if "stopped" in failing and answer.finish_reason == "length":
        assert "cut off at max_tokens" in failed(results)[0].detail


def test_a_backtracking_expect_fails_in_bounded_time() -> None:
    results = check_answer(case(expect=r"^(.*?){25}(?!)"), Answer("the capital of france is paris " * 3, "stop"))
    (bad,) = failed(results)
    assert bad.name == "expect" and "took more than 0.5 s" in bad.detail


@pytest.mark.parametrize(("text", "ok", "detail"), [
    ('{"city": "paris", "n": 3}', True, "ok"),
    ('```json\n{"city": "paris", "n": 3}\n```', True, "ok"),
    ('{"city": "paris"}', False, "the required key 'n' is missing"),
    ('{"city": 3, "n": 3}', False, "$.city: expected string, got integer"),
    ('{"city": "paris", "n": 3, "x": 1}', False, "the key 'x' is not allowed"),
    ('{"city": "paris", "n": 3.5}', False, "$.n: expected integer, got number"),
    ("the city is paris", False, "not JSON"),
])
def test_json_answers_fit_the_schema(text: str, ok: bool, detail: str) -> None:
    c = case(json_schema={"type": "object", "required": ["city", "n"], "additionalProperties": False,
                          "properties": {"city": {"type": "string", "minLength": 1}, "n": {"type": "integer"}}})
    (result,) = [r for r in check_answer(c, Answer(text, "stop")) if r.name == "json"]
    assert result.passed is ok and detail in result.detail


@pytest.mark.parametrize("token", TEMPLATE_TOKENS)
def test_every_template_token_is_caught(token: str) -> None:
    assert names(check_answer(case(), Answer(f"hello {token} there", "stop"))) == ["no_template_tokens"]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_normalising_is_idempotent_and_ignores_case_and_spacing(text: str) -> None:
    once = normalised(text)
    assert normalised(once) == once
    assert normalised("  " + text.upper() + "\n") == normalised(text.upper())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.sampled_from(["stop", "length", None, "tool_calls"]))
def test_generated_answers_never_crash_the_checks(text: str, reason: str | None) -> None:
    c = case(expect="a+b", reference="x", json_schema={"type": "array", "items": {"type": "number"}})
    results = check_answer(c, Answer(text, reason))
    assert len(results) == 7 and all(r.detail for r in results)
    assert ("stopped" in names(results)) is (reason != "stop")


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_schema_basics_hold_for_generated_values(value: object) -> None:
    assert schema.problems(True, value) == [] and schema.problems(False, value)
    assert schema.problems({"enum": [value]}, value) == []
    assert schema.problems({"const": value}, value) == []
    kinds = [k for k in schema.TYPES if not schema.problems({"type": k}, value)]
    assert kinds and set(kinds) <= set(schema.TYPES)
    assert schema.problems({"not": {"const": value}}, value)
    assert schema.problems({"anyOf": [{"type": kinds[0]}, False]}, value) == []
    assert schema.problems({"oneOf": [True, True]}, value)


@pytest.mark.parametrize(("node", "message"), [
    ({"type": "object", "$ref": "#/x"}, "keyword(s) $ref not supported"),
    ({"minLength": -1}, '"minLength" must be a whole number'),
    ({"maximum": "3"}, '"maximum" must be a finite number'),
    ({"anyOf": []}, '"anyOf" must be a non-empty list'),
    ({"items": {"pattern": "(?:a{65535}){65535}"}}, 'at $.items: "pattern"'),
    ([], "a schema must be an object or true/false"),
])
def test_schemas_outside_the_subset_are_refused(node: object, message: str) -> None:
    assert message in schema.schema_problem(node)


def test_booleans_are_not_numbers() -> None:
    assert schema.problems({"type": "integer"}, True)
    assert schema.problems({"enum": [1]}, True)
    assert schema.problems({"enum": [1]}, 1.0) == []
