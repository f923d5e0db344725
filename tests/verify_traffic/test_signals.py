"""The canary's LLM signals (signals.py, checks.py's check 6), on generated answers
(hypothesis): per-prompt behaviour of both models and the router's mix of prompts are
drawn, and the verdict must follow the documented rule — a canary that never stops
fails against a serving model that does, whatever the mix, even with every answer a
200; the same behaviour never fails; worse never passes where better failed; and a
garbled stream is a failed answer, never a crash."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.components.verify_traffic.checks import Policy, judge_step
from tune2serve.components.verify_traffic.probe import PROBE_PROMPTS, Answer, send_streamed
from tune2serve.components.verify_traffic.signals import SignalPolicy, compare, model_signals

from tests.verify_traffic.simulate import NEW, OLD, endpoint_state

POLICY = SignalPolicy()
PROMPTS = PROBE_PROMPTS


def answer(model: str, prompt: str, *, cut: bool = False, empty: bool = False, tokens: int = 5,
           ttft_ms: float = 20.0, per_token_ms: float = 5.0, ok: bool = True) -> Answer:
    return Answer(model, ok, 200 if ok else 503, ttft_ms + per_token_ms * max(0, tokens - 1), "", prompt,
                  "length" if cut else "stop", tokens, 0 if empty else 3 * tokens, ttft_ms)


# A model's behaviour: per prompt (cut off?, empty?, output tokens) — deterministic at temperature 0.
behaviours = st.fixed_dictionaries({p: st.tuples(st.booleans(), st.booleans(), st.integers(1, 32)) for p in PROMPTS})
# How many answers each prompt got from one model (the router's draw).
mixes = st.fixed_dictionaries({p: st.integers(0, 12) for p in PROMPTS})


def answers_of(model: str, behaviour: dict[str, tuple[bool, bool, int]], mix: dict[str, int]) -> list[Answer]:
    return [answer(model, p, cut=behaviour[p][0], empty=behaviour[p][1], tokens=behaviour[p][2])
            for p in PROMPTS for _ in range(mix[p])]


def enough(mix: dict[str, int]) -> bool:
    return sum(mix.values()) >= POLICY.min_samples


@settings(max_examples=200, deadline=None)
@given(behaviours, mixes, mixes)
def test_the_same_behaviour_never_fails_whatever_the_mix(behaviour: dict, mix_a: dict, mix_b: dict) -> None:
    canary = model_signals(answers_of(NEW, behaviour, mix_a))
    serving = model_signals(answers_of(OLD, behaviour, mix_b))
    verdict = compare(canary, serving, POLICY)
    assert verdict.passed, verdict.failures


@settings(max_examples=200, deadline=None)
@given(behaviours, mixes, mixes)
def test_a_canary_that_never_stops_fails_against_one_that_stops(serving_b: dict, mix_c: dict, mix_s: dict) -> None:
    shared = [p for p in PROMPTS if mix_c[p] and mix_s[p]]
    if not (enough(mix_c) and enough(mix_s) and shared):
        return
    serving_cut = sum(serving_b[p][0] for p in shared) / len(shared)
    never_stops = {p: (True, False, 32) for p in PROMPTS}  # every answer a 200, every one cut off
    verdict = compare(model_signals(answers_of(NEW, never_stops, mix_c)),
                      model_signals(answers_of(OLD, serving_b, mix_s)), POLICY)
    if serving_cut < 1 - POLICY.max_length_rate_delta - 1e-9:
        assert not verdict.passed
        assert any("cut off at max_tokens" in f for f in verdict.failures), verdict.failures
    else:  # the serving model is cut off as often: no worse on that count
        assert not any("cut off at max_tokens" in f for f in verdict.failures)


@settings(max_examples=200, deadline=None)
@given(behaviours, behaviours, mixes, mixes, st.sampled_from(PROMPTS))
def test_worse_never_passes_where_better_failed(canary_b: dict, serving_b: dict, mix_c: dict, mix_s: dict,
                                                prompt: str) -> None:
    """Cutting one more prompt's answers off, or emptying them, never turns a failed
    rate check into a passed one (the output length may change, so only rates count)."""
    serving = model_signals(answers_of(OLD, serving_b, mix_s))
    before = compare(model_signals(answers_of(NEW, canary_b, mix_c)), serving, POLICY)
    worse = dict(canary_b)
    worse[prompt] = (True, True, canary_b[prompt][2])
    after = compare(model_signals(answers_of(NEW, worse, mix_c)), serving, POLICY)
    for name in ("cut off at max_tokens", "were empty"):
        if any(name in f for f in before.failures):
            assert any(name in f for f in after.failures), (before.failures, after.failures)


@settings(max_examples=100, deadline=None)
@given(st.floats(1, 2000), st.floats(1.0, 10.0), st.integers(5, 40))
def test_ttft_is_judged_by_ratio_and_slack(serving_ttft: float, factor: float, n: int) -> None:
    serving = model_signals([answer(OLD, PROMPTS[i % 6], ttft_ms=serving_ttft) for i in range(n)])
    canary = model_signals([answer(NEW, PROMPTS[i % 6], ttft_ms=serving_ttft * factor) for i in range(n)])
    failed = any("time to first token" in f for f in compare(canary, serving, POLICY).failures)
    assert failed == (serving_ttft * factor > POLICY.max_ttft_ratio * serving_ttft + POLICY.ttft_slack_ms)


def test_output_length_drift_both_ways() -> None:
    short = {p: (False, False, 2) for p in PROMPTS}
    long = {p: (False, False, 30) for p in PROMPTS}
    every = {p: 3 for p in PROMPTS}
    rambles = compare(model_signals(answers_of(NEW, long, every)), model_signals(answers_of(OLD, short, every)), POLICY)
    terse = compare(model_signals(answers_of(NEW, short, every)), model_signals(answers_of(OLD, long, every)), POLICY)
    assert any("average 30.0 output tokens, the serving model's 2.0" in f for f in rambles.failures)
    assert any("average 2.0 output tokens, the serving model's 30.0" in f for f in terse.failures)


def test_failed_answers_are_not_figures_and_few_answers_are_not_judged() -> None:
    canary = model_signals([answer(NEW, "hello", cut=True, ok=False) for _ in range(50)]
                           + [answer(NEW, "hello") for _ in range(2)])
    assert canary.answers == 2 and canary.length_rate == 0.0
    verdict = compare(canary, model_signals([answer(OLD, "hello") for _ in range(10)]), POLICY)
    assert verdict.passed and "not judged" in verdict.skipped[0]


def test_with_no_serving_model_figures_are_reported_unless_bounds_are_set() -> None:
    never_stops = model_signals([answer(NEW, p, cut=True) for p in PROMPTS])
    assert compare(never_stops, None, POLICY).passed
    bounded = compare(never_stops, None, SignalPolicy(max_length_rate=0.5))
    assert not bounded.passed and "100% of the new model's answers were cut off" in bounded.failures[0]


def test_a_step_where_every_answer_is_a_200_fails_on_a_canary_that_never_stops() -> None:
    split = {OLD: 50, NEW: 50}
    answers = [answer(NEW, p, cut=True, tokens=32) for p in PROMPTS for _ in range(5)]
    answers += [answer(OLD, p, tokens=3) for p in PROMPTS for _ in range(5)]
    step = judge_step(50, NEW, split, endpoint_state(split), answers, Policy())
    assert all(a.status == 200 for a in answers)
    assert step.canary.errors == 0 and not step.passed
    assert any("cut off at max_tokens" in f for f in step.failures)
    assert step.signals is not None and step.signals.canary.length_rate == 1.0
    assert step.serving_signals() is not None
    # at 100 % the serving model answers nothing: the earlier step's figures are the reference
    full = {NEW: 100}
    last = judge_step(100, NEW, full, endpoint_state(full), [a for a in answers if a.deployed_model_id == NEW],
                      Policy(), earlier=("the 50% step", step.serving_signals()))
    assert last.signals is not None and last.signals.reference == "the 50% step" and not last.passed


SSE_GARBAGE = st.lists(st.one_of(
    st.text(max_size=40).map(lambda t: f"data: {t}"),
    st.just('data: {"choices": [{"delta": {"content": "hi"}, "finish_reason": null}]}'),
    st.just('data: {"choices": [{"delta": {}, "finish_reason": "length"}], "usage": {"completion_tokens": "x"}}'),
    st.just('data: {"error": {"message": "boom"}}'),
    st.just("data: [DONE]"), st.just(""), st.text(max_size=20)), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SSE_GARBAGE)
def test_a_garbled_stream_is_an_answer_never_a_crash(lines: list[str]) -> None:
    body = "\n".join(lines).encode("utf-8", errors="replace")
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"X-Vertex-AI-Deployed-Model-Id": NEW, "content-type": "text/event-stream"}, content=body))
    with httpx.Client(transport=transport) as client:
        got = send_streamed(client, "https://x/chat/completions",
                            {"messages": [{"role": "user", "content": "hello"}], "stream": True})
    assert got.deployed_model_id == NEW and got.prompt == "hello"
    if got.ok:
        assert got.output_tokens is not None and got.output_tokens >= 0
        assert got.finish_reason in (None, "length")


def test_a_stream_that_says_nothing_wrong_gives_its_figures() -> None:
    chunks = [{"choices": [{"delta": {"content": w}, "finish_reason": None}]} for w in ("a", " b", " c")]
    chunks.append({"choices": [{"delta": {}, "finish_reason": "length"}], "usage": {"completion_tokens": 3}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"X-Vertex-AI-Deployed-Model-Id": OLD}, content=body.encode()))
    with httpx.Client(transport=transport) as client:
        got = send_streamed(client, "https://x/chat/completions",
                            {"messages": [{"role": "user", "content": "Say OK."}], "stream": True})
    assert (got.ok, got.finish_reason, got.output_tokens, got.text_chars) == (True, "length", 3, 5)
    assert got.ttft_ms is not None and got.ttft_ms <= got.latency_ms


@pytest.mark.parametrize("status", [429, 503])
def test_an_error_status_is_a_failed_answer_from_who_said_so(status: int) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(
        status, headers={"X-Vertex-AI-Deployed-Model-Id": NEW}, content=b'{"error": {}}'))
    with httpx.Client(transport=transport) as client:
        got = send_streamed(client, "https://x/chat/completions",
                            {"messages": [{"role": "user", "content": "hello"}], "stream": True})
    assert (got.ok, got.status, got.deployed_model_id) == (False, status, NEW)
