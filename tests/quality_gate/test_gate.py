"""The gate's run over HTTP, through smoke-test's real data-plane client (httpx), with the
endpoints served by ``httpx.MockTransport`` handlers (STYLE.md §11): every case to both
endpoints, the judge asked in both orders, position bias cancelled, a garbage judge held,
concurrency bounded, retries under the one policy, and the report's escaping. The same
path against real model servers is tests/quality_gate/test_eval_local.py."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tune2serve.components.errors import QualityGateError
from tune2serve.components.quality_gate import judge as jd
from tune2serve.components.quality_gate.evalset import EvalSet, parse_eval_set
from tune2serve.components.quality_gate.gate import GateSettings, Target, evaluate, raise_unless_promoted
from tune2serve.components.quality_gate.report import render_html, render_markdown
from tune2serve.components.quality_gate.verdict import Settings
from tune2serve.components.smoke_test.dataplane import DataPlane
from tune2serve.components.vertex.retry import RetryPolicy

CAND = Target("projects/p/locations/r/endpoints/cand", "https://cand.test/v1beta1/x/chat/completions", "m1")
BASE = Target("projects/p/locations/r/endpoints/base", "https://base.test/v1beta1/x/chat/completions", "m2")
JUDGE = jd.JudgeConfig("https://judge.test/v1beta1/x/chat/completions", "j", jd.default_prompt(), "judge endpoint")
QUICK = GateSettings(Settings(), concurrency=3, case_timeout_s=5.0, warmup=RetryPolicy(0.01, 0.02, 2.0, 4, 5.0),
                     retry=RetryPolicy(0.01, 0.02, 2.0, 3, 5.0))


def chat(text: str, finish: str = "stop") -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": text},
                                                  "finish_reason": finish}], "usage": {"completion_tokens": 3}})


def eval_set(n: int, **fields: object) -> EvalSet:
    return parse_eval_set("".join(json.dumps({"name": f"q{i}", "prompt": f"question {i}", "tags": ["t"], **fields})
                                  + "\n" for i in range(n)), "set.jsonl")


class Endpoints:
    """The three fake servers; records every request by host."""

    def __init__(self, cand: Callable[[str], httpx.Response], base: Callable[[str], httpx.Response],
                 judge: Callable[[str], str] = lambda prompt: "") -> None:
        self.handlers = {"cand.test": cand, "base.test": base}
        self.judge = judge
        self.seen: dict[str, list[dict[str, object]]] = {"cand.test": [], "base.test": [], "judge.test": []}
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        with self.lock:
            self.seen[request.url.host].append(body)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.005)
            content = body["messages"][-1]["content"]
            if request.url.host == "judge.test":
                return chat(self.judge(content))
            return self.handlers[request.url.host](content)
        finally:
            with self.lock:
                self.in_flight -= 1

    def run(self, cases: EvalSet, judge: jd.JudgeConfig | None = JUDGE, baseline: Target | None = BASE,
            settings: GateSettings = QUICK):  # type: ignore[no-untyped-def]
        with httpx.Client(transport=httpx.MockTransport(self)) as client:
            return evaluate(cases, DataPlane(client, lambda: "ya29.secret-token-value", timeout_s=5.0), CAND,
                            baseline, judge, settings)


def prefers(text: str) -> Callable[[str], str]:
    """A judge that picks whichever answer is ``text``, wherever it is shown."""
    def judge(prompt: str) -> str:
        a = re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]", prompt, re.S)
        return json.dumps({"winner": "A" if a and a.group(1) == text else "B", "reason": f"picked {text}"})
    return judge


def test_the_judge_is_asked_in_both_orders_and_a_better_candidate_is_promoted() -> None:
    eps = Endpoints(lambda p: chat("good"), lambda p: chat("poor"), prefers("good"))
    result = eps.run(eval_set(12))
    assert result.verdict.verdict == "promote" and result.verdict.win_rate == 1.0
    assert len(eps.seen["cand.test"]) == len(eps.seen["base.test"]) == 12 and len(eps.seen["judge.test"]) == 24
    shown_first = [re.search(r"\[Answer A\]\n(\w+)", b["messages"][0]["content"]).group(1)  # type: ignore[index,union-attr]
                   for b in eps.seen["judge.test"]]
    assert sorted(shown_first) == ["good"] * 12 + ["poor"] * 12
    assert result.requests == 48 and result.metrics["win_rate_low"] > 0.7
    assert all(b["temperature"] == 0 for b in eps.seen["cand.test"])


def test_a_position_biased_judge_cancels_out() -> None:
    eps = Endpoints(lambda p: chat("good"), lambda p: chat("poor"), lambda prompt: '{"winner": "A"}')
    result = eps.run(eval_set(12))
    assert {c.score for c in result.cases} == {0.5} and result.verdict.verdict == "hold"


@pytest.mark.parametrize("garbage", ["", "the capital of france is paris", "{not json", '{"winner": "maybe"}'])
def test_a_garbage_judge_holds(garbage: str) -> None:
    result = Endpoints(lambda p: chat("good"), lambda p: chat("poor"), lambda prompt: garbage).run(eval_set(12))
    assert result.verdict.verdict == "hold" and "the judge decided 0 case(s)" in result.verdict.rule
    assert all(c.judgments is not None and c.score is None for c in result.cases)


def test_a_worse_candidate_is_rejected_naming_file_line_and_check() -> None:
    eps = Endpoints(lambda p: chat("rome", "length"), lambda p: chat("paris"))
    result = eps.run(eval_set(4, expect="paris"), judge=None)
    assert result.verdict.verdict == "reject" and len(result.regressed) == 4
    with pytest.raises(QualityGateError) as info:
        raise_unless_promoted(result)
    assert info.value.verdict == "reject"
    assert "- set.jsonl:1 q0: stopped: cut off at max_tokens" in str(info.value)
    assert "expect: expected a match for /paris/" in str(info.value)


def test_concurrency_is_bounded_and_blips_are_retried() -> None:
    failures = {"left": 2}
    lock = threading.Lock()

    def flaky(prompt: str) -> httpx.Response:
        with lock:
            if prompt == "question 5" and failures["left"] > 0:
                failures["left"] -= 1
                return httpx.Response(503, json={"error": {"message": "busy"}})
        return chat("fine")

    eps = Endpoints(flaky, lambda p: chat("fine"))
    result = eps.run(eval_set(20), judge=None)
    assert result.verdict.verdict == "promote" and 1 < eps.most_in_flight <= QUICK.concurrency
    assert next(c for c in result.cases if c.case.name == "q5").candidate.attempts == 3


def test_a_baseline_that_never_answers_holds() -> None:
    result = Endpoints(lambda p: chat("fine"), lambda p: httpx.Response(503)).run(eval_set(5), judge=None)
    assert result.verdict.verdict == "hold" and "the baseline did not answer 5 case(s)" in result.verdict.rule


def test_without_a_baseline_the_pass_rate_decides_and_the_judge_is_not_asked() -> None:
    eps = Endpoints(lambda p: chat("" if p == "question 0" else "fine"), lambda p: chat("x"))
    result = eps.run(eval_set(10), baseline=None)
    assert result.verdict.verdict == "promote" and "passes 9 of 10" in result.verdict.rule
    assert eps.seen["judge.test"] == [] and eps.seen["base.test"] == []


def test_the_report_shows_regressions_side_by_side_escaped_and_without_secrets() -> None:
    hostile = "<img src=x onerror=alert(1)> [x](javascript:alert(1)) ya29.a0LeakedTokenValue"
    eps = Endpoints(lambda p: chat(hostile), lambda p: chat("paris"), prefers("paris"))
    result = eps.run(eval_set(3, expect="paris", tags=["geo"]))
    page, text = render_html(result), render_markdown(result)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    outside_fences = re.sub(r"(?ms)^```[a-z]*\n.*?\n```$", "", text)
    assert "<img src=x onerror=alert(1)>" in text and "<img" not in outside_fences and "](javascript" not in outside_fences
    for out in (page, text, json.dumps(result.to_json())):
        assert "a0LeakedTokenValue" not in out and "secret-token-value" not in out
    assert "Regressed cases (3 of 3)" in text and "judge prefers the baseline (score 0)" in text
    assert "| geo | 3 | 3 | 0 | 3 |" in text
    doc = result.to_json()
    assert doc["verdict"] == "reject" and doc["interval"] is None and doc["regressed"] == ["q0", "q1", "q2"]
    assert {"prompt", "candidate", "baseline", "checks", "judge"} <= set(doc["cases"][0])
