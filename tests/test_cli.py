"""The command line's own contract: help, version, usage errors, lazy heavy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tune2serve.components.errors import (
    CheckpointError,
    SourceNotFoundError,
    UsageError,
    VertexUnavailableError,
)
from tune2serve.cli.main import VERBS, exit_code_for, main

HEAVY_MODULES = ("torch", "transformers", "google.cloud.aiplatform", "vertexai", "kfp", "peft")


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_help_imports_nothing_heavy() -> None:
    """`tune2serve --help` must start fast: none of the heavy libraries may load."""
    code = (
        "import sys\n"
        "from tune2serve.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY="


def test_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_no_verb_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: tune2serve" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "0.1.0"


@pytest.mark.parametrize(
    ("error", "verb", "code"),
    [
        (UsageError("x"), "deploy", 2),
        (SourceNotFoundError("x"), "validate", 2),
        (SourceNotFoundError("x"), "export", 1),
        (CheckpointError("x"), "validate", 1),
        (VertexUnavailableError("x"), "deploy", 1),
    ],
)
def test_exit_code_table(error: Exception, verb: str, code: int) -> None:
    assert exit_code_for(error, verb) == code


# --- every numeric flag of every verb: a finite number in its documented range ------

import argparse  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402
from collections.abc import Iterator  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tune2serve.cli.main import build_parser  # noqa: E402
from tune2serve.components import ranges  # noqa: E402

# A command line each verb accepts but for the flag under test (nothing in it is reached:
# the flag must be refused first).
BASE_ARGV: dict[tuple[str, ...], list[str]] = {
    ("validate",): ["validate", "/nonexistent/folder"],
    ("export",): ["export", "/nonexistent/source", "/nonexistent/dest"],
    ("deploy",): ["deploy", "gs://b/export", "--project", "p", "--region", "r"],
    ("eval",): ["eval", "projects/p/locations/r/endpoints/1", "--project", "p", "--region", "r", "--eval-set",
                "/nonexistent/eval.jsonl"],
    ("verify-traffic",): ["verify-traffic", "projects/p/locations/r/endpoints/1", "--project", "p", "--region", "r",
                          "--model", "projects/p/locations/r/models/2"],
    ("run",): ["run"],
    ("submit",): ["submit", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/root"],
    ("schedule", "create"): ["schedule", "create", "--cron", "0 3 * * *", "--display-name", "n", "--project", "p",
                             "--region", "r", "--pipeline-root", "gs://b/root"],
    ("local", "fault"): ["local", "fault", "latency"],
}
# Flags whose 0 is documented as meaningful (no bake, no grace, no error-rate slack, no share).
# eval: --margin 0 leaves the one-case minimum, --delta 0 asks the judge for a win rate above 0.5.
ZERO_MEANS_SOMETHING = {"--bake-s", "--keep-previous", "--max-error-rate-delta", "--percent", "--margin", "--delta",
                        # verify-traffic's LLM signals: no worse at all / none allowed
                        "--max-length-rate-delta", "--max-empty-rate-delta", "--max-length-rate", "--max-empty-rate"}


def _flags(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _flags(sub, (*path, name))
        elif action.option_strings:
            yield path, action


def _spec(action: argparse.Action) -> ranges.Spec | None:
    owner = getattr(action.type, "__self__", None)
    return owner if isinstance(owner, (ranges.Number, ranges.Size, ranges.Percents)) else None


ALL_FLAGS = list(_flags(build_parser()))
NUMERIC = [(path, a) for path, a in ALL_FLAGS if _spec(a) is not None]


def test_every_numeric_flag_goes_through_the_ranges_and_says_its_range() -> None:
    """No verb parses a number with bare int/float (NaN, Inf and negatives pass those);
    each numeric flag's --help carries the range it is checked against."""
    bare = [(path, a.option_strings[0]) for path, a in ALL_FLAGS if a.type in (int, float)]
    assert bare == [], f"numeric flags without a documented range: {bare}"
    assert len(NUMERIC) >= 20
    for path, action in NUMERIC:
        spec = _spec(action)
        assert spec is not None and path in BASE_ARGV, (path, action.option_strings)
        assert action.help == argparse.SUPPRESS or spec.describe() in action.help, action.option_strings


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records (and refuses) every outgoing connection: a refused flag reaches no API."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def _cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse refuses while parsing
        return int(e.code or 0)


NOT_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "1e400", "-1e400", "9" * 400]
GARBAGE = ["", " ", "ten", "1,,2", "0x10", "1e", "--", "5 parsecs", "\x00", "١٢"]
HOSTILE = st.one_of(
    st.sampled_from(NOT_FINITE + GARBAGE),
    st.integers(max_value=-1).map(str),                                   # negatives
    st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=10**13, max_value=10**40).map(str),             # beyond every range
    st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=12),  # no digit at all
)


@pytest.mark.parametrize(("path", "action"), NUMERIC, ids=[f"{' '.join(p)} {a.option_strings[0]}" for p, a in NUMERIC])
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=HOSTILE)
def test_hostile_numbers_exit_2_naming_the_flag_before_any_call(
        path: tuple[str, ...], action: argparse.Action, value: str, no_network: list[object],
        capsys: pytest.CaptureFixture[str]) -> None:
    flag = action.option_strings[0]
    code = _cli([*BASE_ARGV[path], f"{flag}={value}"])
    err = capsys.readouterr().err
    assert code == 2, (flag, value, err)
    assert f"argument {flag}" in err and "Traceback" not in err
    assert no_network == []


@pytest.mark.parametrize(("path", "action"), NUMERIC, ids=[f"{' '.join(p)} {a.option_strings[0]}" for p, a in NUMERIC])
def test_zero_is_refused_where_it_means_nothing(path: tuple[str, ...], action: argparse.Action,
                                                no_network: list[object], capsys: pytest.CaptureFixture[str]) -> None:
    flag = action.option_strings[0]
    if flag in ZERO_MEANS_SOMETHING:
        assert _parses(path, flag, "0")
    else:
        assert not any(_parses(path, flag, zero) for zero in ("0", "0.0", "-0", "0B", "0,100")), flag
    assert no_network == []


def _parses(path: tuple[str, ...], flag: str, text: str) -> bool:
    try:
        build_parser([path[0]]).parse_args([*BASE_ARGV[path], f"{flag}={text}"])
    except SystemExit:
        return False
    return True


@pytest.mark.parametrize(("path", "action"), NUMERIC, ids=[f"{' '.join(p)} {a.option_strings[0]}" for p, a in NUMERIC])
def test_the_documented_ends_are_accepted(path: tuple[str, ...], action: argparse.Action,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The range in --help is the one enforced: its closed ends parse, just past them not."""
    spec, flag = _spec(action), action.option_strings[0]
    if isinstance(spec, ranges.Size):
        assert _parses(path, flag, str(spec.low)) and _parses(path, flag, str(spec.high))
        assert not _parses(path, flag, str(spec.high + 1)) and not _parses(path, flag, str(spec.low - 1))
    elif isinstance(spec, ranges.Percents):
        assert _parses(path, flag, "1,100") and _parses(path, flag, "10, 50")
        assert not _parses(path, flag, "0,100") and not _parses(path, flag, "10,101")
    else:
        assert isinstance(spec, ranges.Number)
        for end, is_open, past in ((spec.low, spec.low_open, spec.low - 1), (spec.high, spec.high_open, spec.high + 1)):
            assert _parses(path, flag, ranges._fmt(end)) is (not is_open and (not spec.choices or end in spec.choices))
            assert not _parses(path, flag, ranges._fmt(past))
        if spec.integer:
            assert not _parses(path, flag, ranges._fmt(spec.low) + ".5")


def _without_help(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Every argument (flag or positional) and every sub-command under ``parser`` whose
    --help would show no text, named as a user types it."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions if choice.help}
            for name, sub in action.choices.items():
                if name not in helped:
                    yield " ".join(("tune2serve", *path, name))
                yield from _without_help(sub, (*path, name))
        elif not action.help:
            yield " ".join(("tune2serve", *path, "/".join(action.option_strings) or action.metavar or action.dest))


def test_every_flag_of_every_verb_has_help_text() -> None:
    """A UI-less user learns a flag from --help only: none may be blank (the list names
    each one that is)."""
    missing = sorted(_without_help(build_parser()))
    assert missing == [], f"arguments without --help text: {missing}"


def test_the_help_walk_sees_every_verb_and_catches_a_blank_flag() -> None:
    """The walk reaches every verb and sub-command, and a flag added without help is named."""
    parser = build_parser()
    walked = {path for path, _ in _flags(parser)}
    assert set(VERBS) - {p[0] for p in walked if p} == set()
    assert {("schedule", "pause"), ("local", "fault"), ("local", "up")} <= walked
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["run"].add_argument("--undocumented")
    assert list(_without_help(parser)) == ["tune2serve run --undocumented"]


@pytest.mark.parametrize("action", [["tick"], ["fault", "latency", "--ms", "5"]])
def test_a_hint_carries_the_home_the_user_gave(action: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`local up` said for a stack that is not running works pasted as printed: with the
    --home the user gave, and without one when they gave none."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNE2SERVE_HOME", raising=False)
    home = tmp_path / "my stack"
    assert main(["local", *action, "--home", str(home)]) == 2
    assert f"run `tune2serve local up --home '{home}'` first" in capsys.readouterr().err
    assert main(["local", *action]) == 2
    assert "run `tune2serve local up` first" in capsys.readouterr().err
