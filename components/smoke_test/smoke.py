"""The smoke test: every request kind, golden prompts, determinism, latency figures.

Order, and why:
1. Read the endpoint (SDK): it must have a deployed model and a dedicated DNS.
2. The first golden prompt as a unary chat completion, with warm-up retries: it doubles
   as the readiness probe, so warm-up time is never mixed into latency figures of the
   other requests (its own latency is the answered attempt's only).
3. Every golden prompt, chat unary at temperature 0, checked against its expectation.
4. The first prompt again: the same text (greedy decoding must be deterministic).
5. Streaming chat (SSE, chunks counted, time to first token) of every golden prompt,
   :predict and :streamRawPredict with the first prompt: each must answer with text.
6. The LLM signals of the chat answers (verify-traffic's ``signals.py``, one rule for
   both steps): the rate of answers cut off at max_tokens (``finish_reason: length``),
   of empty answers, the mean output tokens, time to first token (p95) and per output
   token (p50) — reported as figures. With ``baseline`` (the endpoint serving today), the
   same chat and streamed requests go to it too, its figures are reported beside, and a
   candidate worse beyond ``signals.SignalPolicy``'s margins (compared prompt by prompt;
   ``SMOKE_SIGNALS``: two answers a side suffice, each prompt's answer being the same at
   temperature 0) fails the check "LLM signals vs baseline".
The result holds every check with its request and answer; ``raise_if_failed`` turns a
failure into ``SmokeTestFailedError`` quoting both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.errors import PromotionError, SmokeTestFailedError, VertexUnavailableError
from tune2serve.components.logs import get_logger, log_event, redact
from tune2serve.components.smoke_test import requests as rq
from tune2serve.components.smoke_test.dataplane import (
    REQUEST_POLICY,
    WARMUP_POLICY,
    DataPlane,
    Exchange,
    TokenProvider,
)
from tune2serve.components.smoke_test.golden import GoldenCase, load_golden
from tune2serve.components.smoke_test.stats import summarize
from tune2serve.components.vertex.dedicated_endpoint import request_url
from tune2serve.components.vertex.resources import ResourceName, endpoint_name
from tune2serve.components.verify_traffic.probe import Answer
from tune2serve.components.verify_traffic.signals import ModelSignals, SignalPolicy, SignalVerdict, compare, model_signals
from tune2serve.components.vertex.retry import RetryPolicy

_log = get_logger("smoke_test")
SMOKE_SIGNALS = SignalPolicy(min_samples=2)  # a handful of golden prompts, each answered the same every time
SIGNAL_KINDS = ("chat", "chat_stream")  # the answers that say why they stopped (:predict's do not)


def scrub(value: Any) -> Any:
    """Redacts secret-shaped strings (bearer tokens, ya29., hf_) anywhere in ``value``.
    Shape only, not key names: ``logs.redact`` by key would also blank ``max_tokens``
    and ``tokens_per_s``, which the report must show."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


@dataclass
class Check:
    name: str
    kind: str
    passed: bool
    detail: str
    request: dict[str, Any]
    url: str
    answer: str = ""
    exchange: Exchange | None = None


@dataclass
class SmokeResult:
    endpoint: str
    deployed_model_ids: list[str]
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    signals: dict[str, Any] = field(default_factory=dict)  # {"candidate", "baseline", "baseline_endpoint", "comparison"}

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return scrub({
            "ok": self.passed, "endpoint": self.endpoint, "metrics": self.metrics, "signals": self.signals,
            "checks": [{"name": c.name, "kind": c.kind, "passed": c.passed, "detail": c.detail,
                        "request": c.request, "answer": c.answer,
                        "deployed_model_id": c.exchange.deployed_model_id if c.exchange else ""}
                       for c in self.checks],
        })


@dataclass(frozen=True)
class SmokeSettings:
    warmup: RetryPolicy = WARMUP_POLICY
    retry: RetryPolicy = REQUEST_POLICY
    timeout_s: float = 60.0


def _cached(provider: Callable[[], str | None]) -> TokenProvider:
    """Fetches the token once per run (a refresh per request would cost a round trip)."""
    box: list[str | None] = []

    def token() -> str | None:
        if not box:
            box.append(provider())
        return box[0]

    return token


class SmokeTest:
    def __init__(self, dataplane: DataPlane, endpoint: ResourceName, dns: str, model: str,
                 settings: SmokeSettings = SmokeSettings()) -> None:
        self.dp, self.endpoint, self.dns, self.model, self.settings = dataplane, endpoint, dns, model, settings
        self.exchanges: list[Exchange] = []
        self.errors = 0

    def ask(self, kind: str, case: GoldenCase, name: str, policy: RetryPolicy | None = None,
            expect: Callable[[str], str | None] | None = None) -> Check:
        url = request_url(kind, self.dns, self.endpoint)
        body = rq.request_body(kind, case.messages, case.prompt, model=self.model, max_tokens=case.max_tokens)
        try:
            ex = self.dp.send(kind, url, body, policy or self.settings.retry)
        except (PromotionError, ValueError) as e:
            self.errors += 1
            hint = (" — the endpoint kept failing; check that its replicas are healthy (deployed model "
                    "status, availableReplicaCount) and the model server's logs") if isinstance(
                        e, VertexUnavailableError) else ""
            check = Check(name, kind, False, f"request failed: {e}{hint}", body, url)
            log_event(_log, "smoke.check_failed", f"{name}: {check.detail}", logging.WARNING, kind=kind)
            return check
        self.exchanges.append(ex)
        problem = (expect or case.check)(ex.answer)
        check = Check(name, kind, problem is None, problem or "ok", body, url, ex.answer, ex)
        log_event(_log, "smoke.check", f"{name}: {'passed' if check.passed else 'FAILED: ' + check.detail}",
                  logging.INFO if check.passed else logging.WARNING, kind=kind, latency_s=round(ex.latency_s, 4),
                  deployed_model_id=ex.deployed_model_id)
        return check

    def run(self, cases: list[GoldenCase]) -> list[Check]:
        first = cases[0]
        checks = [self.ask("chat", first, f"{first.name} (chat, after warm-up)", self.settings.warmup)]
        if not checks[0].passed and checks[0].exchange is None:
            return checks  # never answered: the other requests would only repeat the error
        checks += [self.ask("chat", c, f"{c.name} (chat)") for c in cases[1:]]
        baseline = checks[0].answer

        def same_as_first(answer: str) -> str | None:
            return None if answer == baseline else f"expected the same text as the first answer, {baseline!r}"

        if checks[0].exchange is not None:
            checks.append(self.ask("chat", first, f"{first.name} (determinism at temperature 0)",
                                   expect=same_as_first))
        checks += [self.ask("chat_stream", c, f"{c.name} (chat, streaming)") for c in cases]
        non_empty: Callable[[str], str | None] = lambda a: None if a.strip() else "expected a non-empty answer"
        checks.append(self.ask("predict", first, f"{first.name} (:predict)", expect=non_empty))
        checks.append(self.ask("stream_raw_predict", first, f"{first.name} (:streamRawPredict)", expect=non_empty))
        return checks

    def reference_run(self, cases: list[GoldenCase]) -> None:
        """The baseline's side: the same chat and streamed requests, nothing expected of
        the answers (they are the reference), the first one waiting out warm-up."""
        anything: Callable[[str], str | None] = lambda _: None
        for i, c in enumerate(cases):
            self.ask("chat", c, f"{c.name} (baseline, chat)", self.settings.warmup if i == 0 else None, anything)
            self.ask("chat_stream", c, f"{c.name} (baseline, chat, streaming)", expect=anything)

    def signals(self) -> ModelSignals:
        """The LLM figures of the chat answers so far (``signals.model_signals``)."""
        return model_signals([said(e) for e in self.exchanges if e.kind in SIGNAL_KINDS])

    def metrics(self, checks: list[Check]) -> dict[str, float]:
        exs = self.exchanges
        unary = [e for e in exs if e.kind == "chat" and e.completion_tokens]
        streamed = [e for e in exs if e.chunks]
        tokens, token_time = ((sum(e.completion_tokens or 0 for e in unary), sum(e.latency_s for e in unary))
                              if unary else (sum(e.chunks for e in streamed), sum(e.latency_s for e in streamed)))
        return summarize([e.latency_s for e in exs], [e.ttft_s for e in exs if e.ttft_s is not None],
                         tokens, token_time, self.errors, sum(c.passed for c in checks),
                         sum(not c.passed for c in checks))


def said(ex: Exchange) -> Answer:
    """An exchange as the LLM signals read an answer: which prompt, why it stopped, how
    many tokens (usage's, else streamed chunks), how much text, how fast."""
    messages = ex.body.get("messages") or [{}]
    tokens = ex.completion_tokens if ex.completion_tokens is not None else (ex.chunks if ex.kind == "chat_stream"
                                                                           else None)
    return Answer(ex.deployed_model_id or None, True, ex.status, ex.latency_s * 1000, "",
                  str(messages[-1].get("content", "")), ex.finish_reason, tokens, len(ex.answer.strip()),
                  ex.ttft_s * 1000 if ex.ttft_s is not None else None)


def signal_metrics(prefix: str, figures: ModelSignals) -> dict[str, float]:
    """KFP Metrics of one side's LLM figures (absent figures left out)."""
    d = figures.as_dict()
    named = {"length_rate": d["length_rate"], "empty_rate": d["empty_rate"],
             "output_tokens_mean": d["mean_output_tokens"],
             "ttft_p95_s": None if d["ttft_p95_ms"] is None else d["ttft_p95_ms"] / 1000,
             "tpot_p50_s": None if d["tpot_p50_ms"] is None else d["tpot_p50_ms"] / 1000}
    return {f"{prefix}{k}": round(float(v), 4) for k, v in named.items() if v is not None}


def _endpoint_under_test(vertex: Any, name: ResourceName, role: str) -> tuple[Any, Any]:
    """(its state, the deployed model serving most of it) — refused when nothing can be asked."""
    from tune2serve.components.vertex.endpoints import get_endpoint

    state = get_endpoint(vertex, str(name))
    if not state.deployed_models:
        raise SmokeTestFailedError(f"{name}: no model is deployed on this {role}"
                                   + ("; run 'tune2serve deploy' first" if role == "endpoint" else ""))
    if not state.dedicated_endpoint_dns:
        raise SmokeTestFailedError(f"{name}: the {role} has no dedicated DNS name (a Private Service Connect "
                                   "endpoint is reached at its PSC IP from inside the VPC); nothing to test from here")
    return state, max(state.deployed_models, key=lambda d: state.traffic_split.get(d.id, 0))


def _compare_with_baseline(smoke: SmokeTest, reference: SmokeTest, baseline: ResourceName) -> tuple[Check, SignalVerdict]:
    verdict = compare(smoke.signals(), reference.signals(), SMOKE_SIGNALS, str(baseline))
    detail = "; ".join(verdict.failures) or ("ok" + (" (" + "; ".join(verdict.skipped) + ")" if verdict.skipped
                                                     else ""))
    url = request_url("chat", reference.dns, baseline)
    check = Check("LLM signals vs baseline", "signals", verdict.passed, detail, {"baseline": str(baseline)}, url)
    log_event(_log, "smoke.signals", f"LLM signals vs {baseline}: {detail}",
              logging.INFO if verdict.passed else logging.WARNING, baseline=str(baseline))
    return check, verdict


def run_smoke_test(endpoint: str, project: str, region: str, golden: str = "", *, golden_source: str = "golden",
                   client: Any = None, token_provider: TokenProvider | None = None,
                   settings: SmokeSettings = SmokeSettings(), baseline: str = "") -> SmokeResult:
    """Runs every check against ``endpoint``; never raises for a failed check (see
    ``raise_if_failed``), raises for bad input or an endpoint with nothing deployed.
    ``baseline``: an endpoint serving today, asked the same chat requests, whose LLM
    signals the candidate's are reported beside and judged against."""
    from tune2serve.components.vertex import clients

    cases = load_golden(golden, golden_source)
    vertex = clients.target(project, region)
    name = endpoint_name(endpoint, project, region)
    base_name = endpoint_name(baseline, project, region) if baseline else None
    state, top = _endpoint_under_test(vertex, name, "endpoint")
    base_state, base_top = _endpoint_under_test(vertex, base_name, "baseline endpoint") if base_name else (None, None)
    provider = token_provider or _cached(lambda: clients.access_token(vertex))
    own_client = client is None
    if own_client:
        import httpx

        client = httpx.Client(verify=clients.tls_verify(), timeout=httpx.Timeout(settings.timeout_s, connect=10.0),
                              headers={"User-Agent": "tune2serve-smoke-test"})
    try:
        smoke = SmokeTest(DataPlane(client, provider, timeout_s=settings.timeout_s), name,
                          state.dedicated_endpoint_dns, top.model.rsplit("/", 1)[-1], settings)
        log_event(_log, "smoke.start", f"smoke-testing {name} ({len(cases)} golden case(s))",
                  endpoint=str(name), dns=state.dedicated_endpoint_dns)
        checks = smoke.run(cases)
        signals: dict[str, Any] = {"candidate": smoke.signals().as_dict()}
        figures = signal_metrics("", smoke.signals())
        if base_name is not None and base_state is not None and base_top is not None:
            reference = SmokeTest(DataPlane(client, provider, timeout_s=settings.timeout_s), base_name,
                                  base_state.dedicated_endpoint_dns, base_top.model.rsplit("/", 1)[-1], settings)
            reference.reference_run(cases)
            check, verdict = _compare_with_baseline(smoke, reference, base_name)
            checks.append(check)
            figures.update(signal_metrics("baseline_", reference.signals()))
            signals.update(baseline=reference.signals().as_dict(), baseline_endpoint=str(base_name),
                           comparison=verdict.as_dict())
        result = SmokeResult(str(name), [d.id for d in state.deployed_models], checks,
                             {**smoke.metrics(checks), **figures}, signals)
    finally:
        if own_client:
            client.close()
    log_event(_log, "smoke.done", f"{name}: {len(result.checks) - len(result.failures)}/{len(result.checks)} "
              "checks passed", endpoint=str(name), figures=json.dumps(result.metrics))
    return result


def raise_if_failed(result: SmokeResult) -> None:
    if result.passed:
        return
    lines = [f"{result.endpoint}: {len(result.failures)} of {len(result.checks)} smoke-test check(s) failed:"]
    for c in result.failures:
        lines.append(f"- {c.name}: {c.detail}\n  request: POST {c.url} {json.dumps(c.request)}\n  answer: {c.answer!r}")
    raise SmokeTestFailedError(scrub("\n".join(lines)))
