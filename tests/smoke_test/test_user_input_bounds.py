"""Golden files and the patterns in them, as a hostile user writes them: generated
catastrophic-backtracking ``expect`` patterns fail their check in bounded time saying so,
counted-repeat bombs are refused before compiling, and oversized, deep, non-UTF-8 or
malformed golden files are refused naming the file and line — through the one helper
(``components/user_input.py``) that also bounds the local stack's ``--match`` faults."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.cli.main import main
from tune2serve.components import user_input
from tune2serve.components.errors import UsageError
from tune2serve.components.smoke_test.golden import parse_golden

SLACK_S = 2.5  # a bounded match ends within its 0.5 s limit plus a loaded machine's slack

ATOMS = ["a", ".", r"\w", "[ab]", "(?:a|a)", "(?:a|aa)", r"\S", "(?:.*?)"]
INNER = ["+", "*", "{1,9}", "+?", "*?", "{2,}"]
OUTER = ["+", "*", "{1,30}", "{2,}", "{12}"]
TAILS = ["$", "b", "(?!)", "!$", r"\d", "(?<!.)"]


@st.composite
def backtracking(draw: st.DrawFn) -> tuple[str, str]:
    """A nested-quantifier pattern and a subject built to make it backtrack."""
    pattern = (f"^({draw(st.sampled_from(ATOMS))}{draw(st.sampled_from(INNER))})"
               f"{draw(st.sampled_from(OUTER))}{draw(st.sampled_from(TAILS))}")
    subject = draw(st.sampled_from(["a", "ab", "a "])) * draw(st.integers(12, 3000)) + draw(st.sampled_from(["!", "", "?"]))
    return pattern, subject


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(case=backtracking())
def test_a_backtracking_expect_fails_its_check_in_bounded_time(case: tuple[str, str]) -> None:
    pattern, subject = case
    [golden] = parse_golden(json.dumps({"prompt": "q", "expect": pattern}), "golden.jsonl")
    started = time.monotonic()
    verdict = golden.check(subject)
    assert time.monotonic() - started < SLACK_S, pattern
    assert verdict is None or verdict.startswith(("expected a match for", 'the "expect" pattern /')), verdict
    if verdict and verdict.startswith('the "expect"'):
        assert "took more than 0.5 s" in verdict and "catastrophic backtracking" in verdict


@pytest.mark.parametrize("pattern", [r"^(.*?){12}(?!)", r"^(.{1,9}){1,9}(?!)", r"^(.+?)+(?<!.)"])
def test_known_catastrophic_patterns_time_out_with_the_pattern_named(pattern: str) -> None:
    """Patterns that backtrack on any text of a few dozen characters (``re`` would run
    them for hours): the check fails after the limit, naming the pattern."""
    [golden] = parse_golden(json.dumps({"prompt": "q", "expect": pattern}), "golden.jsonl")
    started = time.monotonic()
    verdict = golden.check("the capital of france is paris, a city on the seine.")
    assert time.monotonic() - started < SLACK_S
    assert verdict is not None and verdict.startswith(f'the "expect" pattern /{pattern}/ took more than 0.5 s')


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(counts=st.lists(st.integers(0, 70_000), min_size=1, max_size=4), atom=st.sampled_from(["a", ".", "(?:ab)"]))
def test_counted_repeat_bombs_are_refused_before_compiling(counts: list[int], atom: str) -> None:
    pattern = atom
    for n in counts:
        pattern = f"(?:{pattern}){{{n}}}"
    started = time.monotonic()
    try:
        [golden] = parse_golden(json.dumps({"prompt": "q", "expect": pattern}), "golden.jsonl")
    except UsageError as e:
        assert str(e).startswith('golden.jsonl, line 1: "expect" /') and "repeats to about" in str(e), e
    else:
        assert golden.pattern is not None
    assert time.monotonic() - started < SLACK_S, pattern


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(pattern=st.text(alphabet="()[]{}*+?|.^$\\abc0123456789,:!=<", max_size=40))
def test_any_pattern_text_compiles_or_is_refused_naming_the_line(pattern: str) -> None:
    try:
        [golden] = parse_golden(json.dumps({"prompt": "q", "expect": pattern}) + "\n", "golden.jsonl")
    except UsageError as e:
        assert str(e).startswith('golden.jsonl, line 1: "expect" '), e
        return
    started = time.monotonic()
    golden.check("abc" * 200)
    assert time.monotonic() - started < SLACK_S


HOSTILE_LINES = st.one_of(
    st.integers(5_000, 50_000).map(lambda n: "[" * n + "]" * n),                      # a bracket bomb
    st.integers(4_100, 9_000).map(lambda n: '{"prompt": "q", "max_tokens": ' + "9" * n + "}"),
    st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=60),         # not JSON, mostly
    st.just('{"prompt": "q", "prompt": "r"}'),                                         # a key twice
    st.just('{"prompt": "q", "expect": 7}'),
    st.just('{"prompt": "q", "expect": ""}'),
    st.just('{"prompt": "q", "expect": "' + "a" * 5000 + '"}'),
)


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(before=st.integers(0, 3), line=HOSTILE_LINES)
def test_hostile_lines_are_usage_errors_naming_the_line(before: int, line: str) -> None:
    text = '{"prompt": "ok"}\n' * before + line + "\n"
    try:
        parse_golden(text, "golden.jsonl")
    except UsageError as e:
        assert str(e).startswith(f"golden.jsonl, line {before + 1}: "), e
    # else: the line happened to be blank, a comment or a valid case


def test_a_line_separator_inside_a_json_string_is_not_a_line_break() -> None:
    [case] = parse_golden(json.dumps({"prompt": "a\u2028b\x85c", "expect": "b"}, ensure_ascii=False), "g")
    assert case.prompt == "a\u2028b\x85c"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


FILES = {
    "a 30 MB line": lambda: ('{"prompt": "' + "x" * (30 * 1024 * 1024) + '"}\n').encode(),
    "a 2 MB line": lambda: ('{"prompt": "' + "x" * (2 * 1024 * 1024) + '"}\n').encode(),
    "17 MB of small lines": lambda: b'{"prompt": "hello there"}\n' * (17 * 1024 * 1024 // 26),
    "200k lines": lambda: b'{"prompt": "hi"}\n' * 200_001,
    "not UTF-8": lambda: b'{"prompt": "\xff\xfe"}\n',
    "a bracket bomb": lambda: b"[" * 100_000 + b"]" * 100_000 + b"\n",
}


@pytest.mark.parametrize("kind", list(FILES))
def test_the_cli_refuses_a_hostile_golden_file_at_once(kind: str, tmp_path: Path, no_network: list[object],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_bytes(FILES[kind]())
    started = time.monotonic()
    code = main(["smoke-test", "projects/p/locations/r/endpoints/1", "--project", "p", "--region", "r",
                 "--golden", str(golden)])
    err = capsys.readouterr().err
    assert code == 2 and "golden.jsonl" in err and "Traceback" not in err, err[-500:]
    assert time.monotonic() - started < 10
    assert no_network == []


def test_a_missing_golden_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke-test", "1", "--project", "p", "--region", "r", "--golden", str(tmp_path / "none")]) == 2
    assert f"--golden {tmp_path / 'none'}: cannot read it" in capsys.readouterr().err


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=backtracking())
def test_a_backtracking_fault_match_does_not_stall_the_data_plane(case: tuple[str, str]) -> None:
    from tune2serve.localstack.faults import Fault, FaultBook

    pattern, subject = case
    fault = Fault("http-503", target="7", count=1, match=pattern)
    if fault.problem():
        assert fault.problem().startswith("--match /")
        return
    book = FaultBook()
    book.add(fault)
    started = time.monotonic()
    book.take_http_error({"7"}, subject.encode())
    assert time.monotonic() - started < SLACK_S


def test_the_helper_reads_text_files_within_their_bound(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"x" * 101)
    with pytest.raises(UsageError, match=r"^--eval-set .*big.jsonl: 101 bytes is above the 100-byte limit"):
        user_input.read_text_file(big, "--eval-set", max_bytes=100)
    assert user_input.read_text_file(big, "--eval-set", max_bytes=101) == "x" * 101
    with pytest.raises(UsageError, match="not a regular file"):
        user_input.read_text_file(tmp_path, "--eval-set")


@pytest.mark.parametrize("kind", ["a 2 MB line", "not UTF-8", "a bracket bomb"])
def test_run_refuses_a_hostile_golden_file_before_starting_anything(kind: str, tmp_path: Path,
                                                                    no_network: list[object],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_bytes(FILES[kind]())
    code = main(["run", "--golden", str(golden), "--home", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert code == 2 and "golden.jsonl" in err and "Traceback" not in err, err[-500:]
    assert no_network == [] and not (tmp_path / "home").exists()  # no stack, no demo model made
