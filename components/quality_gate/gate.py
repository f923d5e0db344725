"""The quality gate's run: every case to both endpoints, the checks, the judge, the verdict.

Order, and why:
1. The eval set is read and checked whole before any request (a bad line is exit 2).
2. Each endpoint is read (SDK): a deployed model and a dedicated DNS, as smoke-test needs.
3. The first case goes to each endpoint alone, with smoke-test's warm-up retries, so a
   cold endpoint's warm-up is waited out once instead of failing the first few cases.
4. Then the cases run ``concurrency`` at a time; a case's own requests (candidate,
   baseline, then the judge in both orders) run one after another, so at most
   ``concurrency`` requests are in flight. Every request goes through smoke-test's
   data-plane client (chat completions at temperature 0, retries under the one retry
   policy) and waits at most ``case_timeout_s``.
5. Checks (checks.py) for both answers, the judge's two orderings (judge.py), the verdict
   (verdict.py, POLICY.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.errors import PromotionError, QualityGateError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.quality_gate import judge as jd
from tune2serve.components.quality_gate import verdict as vd
from tune2serve.components.quality_gate.checks import Answer, CheckResult, check_answer, failed
from tune2serve.components.quality_gate.evalset import EvalCase, EvalSet
from tune2serve.components.smoke_test import requests as rq
from tune2serve.components.smoke_test.dataplane import REQUEST_POLICY, WARMUP_POLICY, DataPlane, TokenProvider
from tune2serve.components.smoke_test.smoke import _cached, scrub
from tune2serve.components.vertex.dedicated_endpoint import request_url
from tune2serve.components.vertex.retry import RetryPolicy

_log = get_logger("quality_gate")
DEFAULT_CONCURRENCY = 4
DEFAULT_CASE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Target:
    """Where one model answers: its chat completions URL and the model name to send."""

    name: str
    url: str
    model: str


@dataclass
class CaseResult:
    case: EvalCase
    candidate: Answer
    baseline: Answer | None
    candidate_checks: list[CheckResult]
    baseline_checks: list[CheckResult] | None
    judgments: tuple[jd.Judgment, jd.Judgment] | None = None  # (candidate as A, candidate as B)

    @property
    def score(self) -> float | None:
        if self.judgments is None:
            return None
        first, second = self.judgments
        return vd.case_score(vd.order_score(first.winner, "A"), vd.order_score(second.winner, "B"))

    @property
    def measured(self) -> bool:
        """Whether the baseline answered (a case it never answered is left out)."""
        return self.baseline is None or self.baseline.error is None

    def regressions(self) -> list[str]:
        """Why this case counts against the candidate: checks it fails that the baseline
        passes (every failed check without a baseline), and a judge preferring the baseline."""
        passed_by_baseline = {c.name for c in self.baseline_checks or [] if c.passed}
        out = [f"{c.name}: {c.detail}" for c in failed(self.candidate_checks)
               if self.baseline_checks is None or c.name in passed_by_baseline or c.name == "answered"]
        if self.score is not None and self.score < 0.5:
            out.append(f"judge prefers the baseline (score {self.score:g})")
        return out


@dataclass
class EvalResult:
    candidate: str
    baseline: str | None
    eval_set: EvalSet
    judge: str | None
    cases: list[CaseResult]
    verdict: vd.Verdict
    requests: int = 0
    duration_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def regressed(self) -> list[CaseResult]:
        return [c for c in self.cases if c.regressions()]

    def tag_results(self) -> dict[str, dict[str, Any]]:
        """Per tag: cases, failing cases on each side, regressed cases, the judged win rate."""
        out: dict[str, dict[str, Any]] = {}
        for tag in self.eval_set.tags:
            rows = [c for c in self.cases if tag in c.case.tags]
            rate, interval, deciding = vd.win_rate([c.score for c in rows])
            out[tag] = {"cases": len(rows), "candidate_failed": sum(bool(failed(c.candidate_checks)) for c in rows),
                        "baseline_failed": (sum(bool(failed(c.baseline_checks)) for c in rows)
                                            if self.baseline else None),
                        "regressed": sum(bool(c.regressions()) for c in rows), "win_rate": rate,
                        "interval": list(interval) if interval else None, "judged": deciding}
        return out

    def to_json(self) -> dict[str, Any]:
        return scrub({
            **self.verdict.as_dict(), "ok": self.verdict.verdict == "promote", "candidate_endpoint": self.candidate,
            "baseline_endpoint": self.baseline, "judge": self.judge,
            "eval_set": {"source": self.eval_set.source, "sha256": self.eval_set.sha256, "cases": len(self.cases)},
            "metrics": self.metrics, "tags": self.tag_results(),
            "regressed": [c.case.name for c in self.regressed],
            "cases": [_case_json(c) for c in self.cases],
        })


def _checks_json(checks: list[CheckResult] | None) -> list[dict[str, Any]] | None:
    return None if checks is None else [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks]


def _case_json(c: CaseResult) -> dict[str, Any]:
    judge = None
    if c.judgments is not None:
        judge = {"score": c.score, "orderings": [
            {"candidate_as": side, "winner": j.winner, "reason": j.reason, "error": j.error,
             **({"answer": j.text} if j.winner is None else {})} for side, j in zip("AB", c.judgments)]}
    return {"name": c.case.name, "line": c.case.line, **c.case.as_input(), "tags": list(c.case.tags),
            "candidate": c.candidate.text, "baseline": c.baseline.text if c.baseline else None,
            "checks": {"candidate": _checks_json(c.candidate_checks), "baseline": _checks_json(c.baseline_checks)},
            "finish_reason": {"candidate": c.candidate.finish_reason,
                              "baseline": c.baseline.finish_reason if c.baseline else None},
            "judge": judge, "regressions": c.regressions()}


@dataclass(frozen=True)
class GateSettings:
    verdict: vd.Settings = vd.Settings()
    concurrency: int = DEFAULT_CONCURRENCY
    case_timeout_s: float = DEFAULT_CASE_TIMEOUT_S
    warmup: RetryPolicy = WARMUP_POLICY
    retry: RetryPolicy = REQUEST_POLICY


class Runner:
    """Sends the cases; counts every request sent (retries included) for the figures."""

    def __init__(self, dataplane: DataPlane, settings: GateSettings) -> None:
        self.dp, self.settings = dataplane, settings
        self._lock = threading.Lock()
        self.requests = 0

    def chat(self, target: Target, messages: tuple[dict[str, str], ...] | list[dict[str, str]], max_tokens: int,
             policy: RetryPolicy | None = None) -> Answer:
        """One chat completion; a failure after retries is an Answer with ``error`` set."""
        body = rq.chat_body(messages, model=target.model, max_tokens=max_tokens)
        exchange = None
        try:
            exchange = self.dp.send("chat", target.url, body, policy or self.settings.retry)
        except (PromotionError, ValueError) as e:
            return Answer(error=str(e))
        finally:
            with self._lock:
                self.requests += exchange.attempts if exchange else 1
        choices = exchange.raw.get("choices") or [{}]
        reason = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
        return Answer(exchange.answer, str(reason) if reason is not None else None, None, exchange.latency_s,
                      exchange.attempts, exchange.deployed_model_id)

    def judge(self, config: jd.JudgeConfig, case: EvalCase, first: str, second: str) -> jd.Judgment:
        """One ordering: ``first`` shown as A, ``second`` as B."""
        prompt = jd.fill(config.prompt, question=case.question(), answer_a=first, answer_b=second,
                         reference=case.reference)
        answer = self.chat(jd_target(config), [{"role": "user", "content": prompt}], jd.JUDGE_MAX_TOKENS)
        if answer.error is not None:
            return jd.Judgment(None, error=answer.error)
        return jd.parse_judgment(answer.text)

    def run_case(self, case: EvalCase, candidate: Target, baseline: Target | None, judge: jd.JudgeConfig | None,
                 policy: RetryPolicy | None = None) -> CaseResult:
        cand = self.chat(candidate, case.messages, case.max_tokens, policy)
        base = self.chat(baseline, case.messages, case.max_tokens, policy) if baseline else None
        result = CaseResult(case, cand, base, check_answer(case, cand), check_answer(case, base) if base else None)
        if judge is not None and base is not None and cand.error is None and base.error is None:
            result.judgments = (self.judge(judge, case, cand.text, base.text),
                                self.judge(judge, case, base.text, cand.text))
        log_event(_log, "eval.case", f"{case.name}: candidate {_summary(result.candidate_checks)}"
                  + (f", baseline {_summary(result.baseline_checks)}" if result.baseline_checks is not None else "")
                  + (f", judge score {result.score}" if result.judgments is not None else ""),
                  logging.INFO if not result.regressions() else logging.WARNING, case=case.name, line=case.line)
        return result

    def run(self, cases: tuple[EvalCase, ...], candidate: Target, baseline: Target | None,
            judge: jd.JudgeConfig | None) -> list[CaseResult]:
        first = self.run_case(cases[0], candidate, baseline, judge, self.settings.warmup)
        with ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="eval") as pool:
            rest = list(pool.map(lambda c: self.run_case(c, candidate, baseline, judge), cases[1:]))
        return [first, *rest]


def jd_target(config: jd.JudgeConfig) -> Target:
    return Target(config.label, config.url, config.model)


def _summary(checks: list[CheckResult] | None) -> str:
    bad = failed(checks or [])
    return "passed" if not bad else "failed " + ", ".join(c.name for c in bad)


def tally(results: list[CaseResult], judged: bool) -> vd.Tally:
    """The counts the verdict is decided from (see verdict.Tally)."""
    measured = [r for r in results if r.measured]
    baseline = results and results[0].baseline_checks is not None
    return vd.Tally(
        cases=len(measured), candidate_failed=sum(bool(failed(r.candidate_checks)) for r in measured),
        baseline_failed=sum(bool(failed(r.baseline_checks or [])) for r in measured) if baseline else None,
        scores=tuple(r.score for r in measured) if judged else (), judged=judged,
        unmeasured=len(results) - len(measured))


def metrics(result: EvalResult) -> dict[str, float]:
    """KFP Metrics: pass rates, the win rate and its interval, counts, cost."""
    n = len(result.cases) or 1
    out: dict[str, float] = {
        "cases": float(len(result.cases)),
        "candidate_pass_rate": sum(not failed(c.candidate_checks) for c in result.cases) / n,
        "regressed_cases": float(len(result.regressed)), "requests": float(result.requests),
        "duration_s": round(result.duration_s, 3)}
    if result.baseline:
        out["baseline_pass_rate"] = sum(not failed(c.baseline_checks or []) for c in result.cases) / n
    if result.judge:
        out["judged_cases"] = float(result.verdict.deciding)
    if result.verdict.win_rate is not None and result.verdict.interval is not None:
        out.update(win_rate=result.verdict.win_rate, win_rate_low=result.verdict.interval[0],
                   win_rate_high=result.verdict.interval[1])
    return out


def evaluate(eval_set: EvalSet, dataplane: DataPlane, candidate: Target, baseline: Target | None,
             judge: jd.JudgeConfig | None, settings: GateSettings = GateSettings()) -> EvalResult:
    """Runs every case and decides; never raises for a hold or a reject (``raise_unless_promoted``)."""
    if judge is not None and baseline is None:
        log_event(_log, "eval.judge_unused", "no baseline (a first promotion): the judge has nothing to compare "
                  "with and is not asked", logging.WARNING)
        judge = None
    log_event(_log, "eval.start", f"evaluating {candidate.name} against {baseline.name if baseline else 'no baseline'}"
              f" on {len(eval_set.cases)} case(s) of {eval_set.source}", candidate=candidate.name,
              baseline=baseline.name if baseline else "", judge=judge.label if judge else "")
    started = time.monotonic()
    runner = Runner(dataplane, settings)
    results = runner.run(eval_set.cases, candidate, baseline, judge)
    decided = vd.decide(tally(results, judge is not None), settings.verdict)
    result = EvalResult(candidate.name, baseline.name if baseline else None, eval_set,
                        judge.label if judge else None, results, decided, runner.requests,
                        time.monotonic() - started)
    result.metrics = metrics(result)
    log_event(_log, "eval.verdict", f"{decided.verdict}: {decided.rule}", candidate=candidate.name,
              verdict=decided.verdict, regressed=len(result.regressed))
    return result


def raise_unless_promoted(result: EvalResult, limit: int = 20) -> None:
    """``QualityGateError`` (exit 1) for a hold or a reject, naming the rule and the
    regressed cases (file:line, name, why)."""
    if result.verdict.verdict == "promote":
        return
    lines = [f"{result.candidate}: quality gate {result.verdict.verdict.upper()}: {result.verdict.rule}"]
    for c in result.regressed[:limit]:
        lines.append(f"- {result.eval_set.source}:{c.case.line} {c.case.name}: {'; '.join(c.regressions())}")
    if len(result.regressed) > limit:
        lines.append(f"- ... and {len(result.regressed) - limit} more regressed case(s) (see the report)")
    raise QualityGateError(scrub("\n".join(lines)), verdict=result.verdict.verdict)


def resolve_target(vertex: Any, endpoint: str, what: str, model: str = "") -> Target:
    """An endpoint's chat completions URL and model, read as smoke-test reads it: it must
    have a deployed model and a dedicated DNS name. ``model`` overrides the model name."""
    from tune2serve.components.vertex.endpoints import get_endpoint
    from tune2serve.components.vertex.resources import endpoint_name

    name = endpoint_name(endpoint, vertex.project, vertex.region)
    state = get_endpoint(vertex, str(name))
    if not state.deployed_models:
        raise QualityGateError(f"{what} {name}: no model is deployed on this endpoint")
    if not state.dedicated_endpoint_dns:
        raise QualityGateError(f"{what} {name}: the endpoint has no dedicated DNS name (a Private Service Connect "
                               "endpoint is reached at its PSC IP from inside the VPC); nothing to ask from here")
    top = max(state.deployed_models, key=lambda d: state.traffic_split.get(d.id, 0))
    return Target(str(name), request_url("chat", state.dedicated_endpoint_dns, name),
                  model or top.model.rsplit("/", 1)[-1])


def judge_config(vertex: Any, endpoint: str, model: str, prompt: str) -> jd.JudgeConfig | None:
    """The judge: a Vertex endpoint (``endpoint``), else a model through Vertex AI's
    OpenAI-compatible API (``model`` alone), else none."""
    if endpoint:
        target = resolve_target(vertex, endpoint, "--judge-endpoint", model)
        return jd.JudgeConfig(target.url, target.model, prompt, f"endpoint {target.name} (model {target.model})")
    if model:
        return jd.JudgeConfig(jd.gemini_url(vertex.rest_base_url, vertex.project, vertex.region), model, prompt,
                              f"{model} (Vertex AI OpenAI-compatible API, {vertex.region})")
    return None


@dataclass(frozen=True)
class GateRequest:
    """What ``run_eval`` needs besides the eval set: the endpoints and the judge."""

    candidate: str
    baseline: str = ""
    project: str = ""
    region: str = ""
    judge_endpoint: str = ""
    judge_model: str = ""
    judge_prompt: str | None = None  # the prompt's text; None: the shipped one


def run_eval(request: GateRequest, eval_set: EvalSet, settings: GateSettings = GateSettings(), *,
             client: Any = None, token_provider: TokenProvider | None = None) -> EvalResult:
    """The gate against real endpoints (the cloud or the local stack, as the environment says)."""
    from tune2serve.components.vertex import clients

    vertex = clients.target(request.project, request.region)
    clients.check_region(vertex.region)
    candidate = resolve_target(vertex, request.candidate, "CANDIDATE_ENDPOINT")
    baseline = resolve_target(vertex, request.baseline, "--baseline") if request.baseline else None
    prompt = jd.check_prompt(request.judge_prompt, "judge prompt") if request.judge_prompt else jd.default_prompt()
    judge = judge_config(vertex, request.judge_endpoint, request.judge_model, prompt)
    provider: Callable[[], str | None] = token_provider or _cached(lambda: clients.access_token(vertex))
    own_client = client is None
    if own_client:
        import httpx

        client = httpx.Client(verify=clients.tls_verify(), timeout=httpx.Timeout(settings.case_timeout_s, connect=10.0),
                              headers={"User-Agent": "tune2serve-eval"})
    try:
        return evaluate(eval_set, DataPlane(client, provider, timeout_s=settings.case_timeout_s), candidate,
                        baseline, judge, settings)
    finally:
        if own_client:
            client.close()


__all__ = ["CaseResult", "EvalResult", "GateRequest", "GateSettings", "Runner", "Target", "evaluate", "judge_config",
           "metrics", "raise_unless_promoted", "resolve_target", "run_eval", "tally"]
