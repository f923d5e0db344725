"""The eval set reader, fed what a hostile or careless user writes: generated lines
are either read or refused naming the file and the line (never a traceback, never a
hang), the bounds of components/user_input.py hold, and the CLI turns every refusal into
exit 2 before any request is sent (no project or endpoint is reachable in these tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.cli.main import main
from tune2serve.components import user_input
from tune2serve.components.errors import UsageError
from tune2serve.components.quality_gate.evalset import parse_eval_set, read_eval_set

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELD_VALUES = {"prompt": st.text(max_size=30) | JSON, "reference": st.text(max_size=20) | JSON,
                "expect": st.sampled_from(["paris", "(a+)+$", "(?:a{65535}){65535}", "[", "", "x" * 5000]) | JSON,
                "json_schema": JSON | st.sampled_from([{"type": "object"}, {"type": "strin"}, {"format": "date"}]),
                "tags": st.lists(st.text(max_size=5), max_size=3) | JSON,
                "max_tokens": st.integers(-5, 5000) | JSON, "name": st.text(max_size=10) | JSON}


@st.composite
def case_docs(draw: st.DrawFn) -> dict[str, object]:
    keys = draw(st.lists(st.sampled_from([*FIELD_VALUES, "messages", "bogus"]), unique=True, max_size=5))
    doc: dict[str, object] = {}
    for key in keys:
        if key == "messages":
            doc[key] = draw(st.lists(st.fixed_dictionaries({"role": st.text(max_size=5), "content": st.text(max_size=9)}),
                                     max_size=2) | JSON)
        elif key == "bogus":
            doc[key] = 1
        else:
            doc[key] = draw(FIELD_VALUES[key])
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(case_docs() | JSON, min_size=1, max_size=4), st.integers(0, 3))
def test_generated_lines_are_read_or_refused_by_line(docs: list[object], blanks: int) -> None:
    text = "\n" * blanks + "\n".join(json.dumps(d) for d in docs) + "\n"
    try:
        cases = parse_eval_set(text, "set.jsonl")
    except UsageError as e:
        assert str(e).startswith("set.jsonl")
        assert ", line " in str(e) or "no case" in str(e)
        return
    assert len(cases.cases) == len(docs)
    for case, doc in zip(cases.cases, docs):
        assert isinstance(doc, dict) and ("prompt" in doc) != ("messages" in doc)
        assert case.messages and all(m["content"] == str(m["content"]) for m in case.messages)
        assert 1 <= case.max_tokens <= 4096


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_generated_bytes_are_read_or_refused_naming_the_file(tmp_path_factory: pytest.TempPathFactory,
                                                             data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "set.jsonl"
    path.write_bytes(data)
    try:
        read_eval_set(str(path))
    except UsageError as e:
        assert str(path) in str(e)


def test_a_good_set_is_read_with_its_digest() -> None:
    text = (json.dumps({"prompt": "capital of france?", "reference": "Paris", "tags": ["geo", "geo"]}) + "\n# note\n"
            + json.dumps({"name": "js", "messages": [{"role": "user", "content": "json please"}],
                          "json_schema": {"type": "object", "required": ["a"]}, "max_tokens": 32}) + "\n")
    cases = parse_eval_set(text, "set.jsonl")
    first, second = cases.cases
    assert (first.name, first.line, first.tags, first.reference) == ("case-1", 1, ("geo",), "Paris")
    assert (second.name, second.line, second.max_tokens, second.prompt) == ("js", 3, 32, None)
    assert cases.tags == ["geo"] and len(cases.sha256) == 64


@pytest.mark.parametrize(("line", "message"), [
    ('{"prompt": "x", "messages": []}', 'line 2: give exactly one of "prompt"'),
    ('{"prompt": "x", "expect": "(?:a{65535}){65535}"}', 'line 2: "expect" /(?:a{65535}){65535}/ repeats'),
    ('{"prompt": "x", "json_schema": {"type": "object", "format": "email"}}',
     "line 2: \"json_schema\" at $: keyword(s) format not supported"),
    ('{"prompt": "x", "json_schema": {"properties": {"a": {"type": "strin"}}}}',
     'at $.properties.a: "type" must be one of'),
    ('{"prompt": "x", "max_tokens": 0}', 'line 2: "max_tokens" must be an integer from 1 to 4096'),
    ('{"prompt": "x", "tags": "geo"}', 'line 2: "tags" must be a list'),
    ('{"prompt": "x", "judge": "me"}', "line 2: unknown field(s) judge"),
    ('{"name": "case-1", "prompt": "y"}', "line 2: the name 'case-1' is used already on line 1"),
    ("[1, 2]", "line 2: expected a JSON object, got list"),
    ('{"prompt": "x"', "line 2"),
])
def test_bad_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_eval_set('{"prompt": "first"}\n' + line + "\n", "set.jsonl")
    assert str(info.value).startswith("set.jsonl, line 2") and message in str(info.value)


def test_size_bounds_are_checked_before_parsing() -> None:
    with pytest.raises(UsageError, match=r"line 1: longer than 1048576 bytes"):
        parse_eval_set(json.dumps({"prompt": "x" * (user_input.MAX_LINE_BYTES + 10)}), "big.jsonl")
    with pytest.raises(UsageError, match=r"no case in the eval set"):
        parse_eval_set("\n# only a comment\n", "empty.jsonl")


def _cli(tmp_path: Path, *extra: str) -> list[str]:
    return ["eval", "projects/p/locations/us-central1/endpoints/1", "--project", "p", "--region", "us-central1",
            *extra]


def test_cli_usage_errors_exit_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(_cli(tmp_path, "--eval-set", str(missing))) == 2
    err = capsys.readouterr().err
    assert f"--eval-set {missing}: cannot read it" in err and "Traceback" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3}\n', encoding="utf-8")
    assert main(_cli(tmp_path, "--eval-set", str(bad))) == 2
    assert f'{bad}, line 2: "prompt" must be a non-empty string' in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "ok"}\n', encoding="utf-8")
    prompt = tmp_path / "judge.txt"
    prompt.write_text("compare {{answer_a}} with {{answer_b}}", encoding="utf-8")
    assert main(_cli(tmp_path, "--eval-set", str(good), "--judge-prompt", str(prompt))) == 2
    assert f"{prompt}: the judge prompt lacks {{{{question}}}}" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [("--margin", "nan"), ("--margin", "1"), ("--delta", "0.5"),
                                             ("--min-pass-rate", "1.5"), ("--concurrency", "0"),
                                             ("--case-timeout", "0"), ("--concurrency", "2.5")])
def test_numeric_flags_have_ranges(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "ok"}\n', encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(_cli(tmp_path, "--eval-set", str(good), flag, value))
    assert info.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
