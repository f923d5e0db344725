"""Canary signals that see LLM failures: what the answers themselves say, per deployed
model, beside HTTP status and latency. Pure: no network here.

Why: a tuned model that never stops generating (every answer cut off at ``max_tokens``,
``finish_reason: length``), answers nothing, or answers at a very different length
returns fast HTTP 200s — every operational gate passes it. Cloud Monitoring has no
``finish_reason`` or token timings per deployed model, so these figures come from the
requests verify-traffic sends itself at each step (``probe.py``: streamed chat
completions over a fixed set of short prompts, at temperature 0).

Figures, per deployed model (successful answers only; errors are checks.py's business):

* **cut-off rate** — the share of answers with ``finish_reason: length``;
* **empty rate** — the share of answers with no text (whitespace only);
* **output length** — mean output tokens (``usage.completion_tokens``, else the number
  of streamed chunks), compared on the prompts where neither model was cut off (a
  cut-off answer's length is max_tokens, not the model's);
* **TTFT** — time to the first streamed chunk of text, p95;
* **TPOT** — time per output token after the first, ``(total - TTFT) / (tokens - 1)``, p50.

Compared prompt by prompt: at temperature 0 each prompt's answer is the same every time,
so which prompts the router happened to give each model must not count as a difference
between the models. The rates and the output length are averaged over the prompts both
models answered (each prompt weighs the same); the timings are pooled.

The rule (``SignalPolicy``; defaults in docs/OPERATIONS.md, flags in ``components/ranges.py``):
the canary fails when its cut-off rate exceeds the serving model's by more than
``max_length_rate_delta`` (0.25), its empty rate by more than ``max_empty_rate_delta``
(0.20), its output length leaves ``[1/r, r]`` times the serving model's (``r`` =
``max_output_length_ratio``, 2.0, give or take ``output_length_slack_tokens``, 4), its
TTFT p95 exceeds ``max_ttft_ratio`` (3.0) times theirs plus ``ttft_slack_ms`` (250), or
its TPOT p50 exceeds ``max_tpot_ratio`` (3.0) times theirs plus ``tpot_slack_ms`` (50).
With no serving model to compare with (a standalone endpoint, a first promotion, the
100 % step when no earlier step saw the serving model) the figures are reported and the
rates are held to absolute bounds only when set: cut-off at most ``max_length_rate``,
empty at most ``max_empty_rate`` (default: none — a base or tiny model may well run to
max_tokens on any prompt, and only a comparison says the tune made it worse). A comparison needs ``min_samples`` (5) answers on each side
(and, for the prompt-wise figures, prompts both answered); below that it is not made and
the report says so — the routing test already made sure the canary got its share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tune2serve.components.verify_traffic.stats import percentile

LENGTH = "length"


class Answered(Protocol):
    """What a probe answer carries that these figures read (``probe.Answer``)."""

    ok: bool
    prompt: str
    finish_reason: str | None
    output_tokens: int | None
    text_chars: int
    ttft_ms: float | None
    latency_ms: float


@dataclass(frozen=True)
class SignalPolicy:
    """The margins of the comparison; see the module docstring."""

    max_length_rate_delta: float = 0.25
    max_empty_rate_delta: float = 0.20
    max_output_length_ratio: float = 2.0
    output_length_slack_tokens: float = 4.0
    max_ttft_ratio: float = 3.0
    ttft_slack_ms: float = 250.0
    max_tpot_ratio: float = 3.0
    tpot_slack_ms: float = 50.0
    max_length_rate: float | None = None  # absolute bounds, with no serving model only
    max_empty_rate: float | None = None
    min_samples: int = 5


@dataclass(frozen=True)
class PromptTally:
    """One prompt's answers from one model."""

    answers: int = 0
    cut: int = 0
    empty: int = 0
    tokens: int = 0

    def add(self, other: PromptTally) -> PromptTally:
        return PromptTally(self.answers + other.answers, self.cut + other.cut, self.empty + other.empty,
                           self.tokens + other.tokens)


@dataclass(frozen=True)
class ModelSignals:
    """One deployed model's figures over a set of successful answers."""

    prompts: Mapping[str, PromptTally] = field(default_factory=dict)
    ttft_ms: tuple[float, ...] = ()
    tpot_ms: tuple[float, ...] = ()

    @property
    def answers(self) -> int:
        return sum(t.answers for t in self.prompts.values())

    @property
    def length_rate(self) -> float | None:
        return _rate(self.prompts.values(), "cut")

    @property
    def empty_rate(self) -> float | None:
        return _rate(self.prompts.values(), "empty")

    @property
    def mean_output_tokens(self) -> float | None:
        n = self.answers
        return sum(t.tokens for t in self.prompts.values()) / n if n else None

    @property
    def ttft_p95_ms(self) -> float | None:
        return percentile(self.ttft_ms, 95)

    @property
    def tpot_p50_ms(self) -> float | None:
        return percentile(self.tpot_ms, 50)

    def merged(self, other: ModelSignals) -> ModelSignals:
        prompts = dict(self.prompts)
        for p, t in other.prompts.items():
            prompts[p] = prompts.get(p, PromptTally()).add(t)
        return ModelSignals(prompts, self.ttft_ms + other.ttft_ms, self.tpot_ms + other.tpot_ms)

    def as_dict(self) -> dict[str, Any]:
        return {"answers": self.answers, "length_rate": _r(self.length_rate), "empty_rate": _r(self.empty_rate),
                "mean_output_tokens": _r(self.mean_output_tokens, 2), "ttft_p95_ms": _r(self.ttft_p95_ms, 1),
                "tpot_p50_ms": _r(self.tpot_p50_ms, 2), "ttft_samples": len(self.ttft_ms),
                "tpot_samples": len(self.tpot_ms)}


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _rate(tallies: Iterable[PromptTally], what: str) -> float | None:
    tallies = [t for t in tallies if t.answers]
    total = sum(t.answers for t in tallies)
    return sum(getattr(t, what) for t in tallies) / total if total else None


def tpot_ms(answer: Answered) -> float | None:
    """Time per output token after the first, or None when it cannot be told."""
    if answer.ttft_ms is None or not answer.output_tokens or answer.output_tokens < 2:
        return None
    return max(0.0, answer.latency_ms - answer.ttft_ms) / (answer.output_tokens - 1)


def model_signals(answers: Sequence[Answered]) -> ModelSignals:
    """The figures of ``answers`` (one model's); failed answers are left out."""
    prompts: dict[str, PromptTally] = {}
    ttft, tpot = [], []
    for a in answers:
        if not a.ok:
            continue
        one = PromptTally(1, int(a.finish_reason == LENGTH), int(a.text_chars == 0), a.output_tokens or 0)
        prompts[a.prompt] = prompts.get(a.prompt, PromptTally()).add(one)
        if a.ttft_ms is not None:
            ttft.append(a.ttft_ms)
        per_token = tpot_ms(a)
        if per_token is not None:
            tpot.append(per_token)
    return ModelSignals(dict(sorted(prompts.items())), tuple(ttft), tuple(tpot))


def paired(canary: ModelSignals, serving: ModelSignals) -> tuple[ModelSignals, ModelSignals]:
    """Both models restricted to the prompts both answered, each prompt weighing the same
    (its tally scaled to one answer's worth is what the averages below compute)."""
    shared = sorted(set(canary.prompts) & set(serving.prompts))
    return (ModelSignals({p: canary.prompts[p] for p in shared}, canary.ttft_ms, canary.tpot_ms),
            ModelSignals({p: serving.prompts[p] for p in shared}, serving.ttft_ms, serving.tpot_ms))


def _per_prompt_mean(signals: ModelSignals, what: str) -> float:
    """The mean over prompts of each prompt's own rate (or mean tokens)."""
    values = [getattr(t, what) / t.answers for t in signals.prompts.values() if t.answers]
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class SignalVerdict:
    canary: ModelSignals
    serving: ModelSignals | None
    reference: str  # where the serving figures come from: "this step", "step N%", or "none"
    failures: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # comparisons not made, and why

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"canary": self.canary.as_dict(), "serving": self.serving.as_dict() if self.serving else None,
                "reference": self.reference, "passed": self.passed, "failures": list(self.failures),
                "skipped": list(self.skipped)}


def _absolute(canary: ModelSignals, policy: SignalPolicy) -> list[str]:
    out = []
    length, empty = canary.length_rate or 0.0, canary.empty_rate or 0.0
    if policy.max_length_rate is not None and length > policy.max_length_rate:
        out.append(f"{length:.0%} of the new model's answers were cut off at max_tokens (finish_reason length; "
                   f"at most {policy.max_length_rate:.0%} with no serving model to compare with)")
    if policy.max_empty_rate is not None and empty > policy.max_empty_rate:
        out.append(f"{empty:.0%} of the new model's answers were empty (at most {policy.max_empty_rate:.0%} with "
                   "no serving model to compare with)")
    return out


def _rates(canary: ModelSignals, serving: ModelSignals, policy: SignalPolicy) -> list[str]:
    out = []
    for what, name, margin in (("cut", "cut off at max_tokens (finish_reason length)", policy.max_length_rate_delta),
                               ("empty", "empty", policy.max_empty_rate_delta)):
        c, s = _per_prompt_mean(canary, what), _per_prompt_mean(serving, what)
        if c > s + margin + 1e-12:
            out.append(f"{c:.0%} of the new model's answers were {name}, the serving model's {s:.0%} on the same "
                       f"{len(canary.prompts)} prompt(s): more than {margin:.0%} worse")
    # Lengths only where both answers stopped by themselves: a cut-off answer's length is
    # max_tokens, not the model's (and a canary cut off more often fails the rate above).
    uncut = [p for p in canary.prompts if canary.prompts[p].cut == 0 and serving.prompts[p].cut == 0]
    if not uncut:
        return out
    c = _per_prompt_mean(ModelSignals({p: canary.prompts[p] for p in uncut}), "tokens")
    s = _per_prompt_mean(ModelSignals({p: serving.prompts[p] for p in uncut}), "tokens")
    r, slack = policy.max_output_length_ratio, policy.output_length_slack_tokens
    if c > r * s + slack or c < s / r - slack:
        out.append(f"the new model's answers average {c:.1f} output tokens, the serving model's {s:.1f} on the same "
                   f"{len(uncut)} prompt(s) neither cut off: outside {1 / r:.2g}x-{r:g}x (give or take {slack:g} "
                   "tokens)")
    return out


def _timings(canary: ModelSignals, serving: ModelSignals, policy: SignalPolicy) -> tuple[list[str], list[str]]:
    failures, skipped = [], []
    for name, c_samples, s_samples, c, s, ratio, slack in (
            ("time to first token p95", canary.ttft_ms, serving.ttft_ms, canary.ttft_p95_ms, serving.ttft_p95_ms,
             policy.max_ttft_ratio, policy.ttft_slack_ms),
            ("time per output token p50", canary.tpot_ms, serving.tpot_ms, canary.tpot_p50_ms, serving.tpot_p50_ms,
             policy.max_tpot_ratio, policy.tpot_slack_ms)):
        if min(len(c_samples), len(s_samples)) < policy.min_samples or c is None or s is None:
            skipped.append(f"{name}: fewer than {policy.min_samples} samples on a side "
                           f"({len(c_samples)} new, {len(s_samples)} serving)")
        elif c > ratio * s + slack:
            failures.append(f"the new model's {name} {c:.1f} ms exceeds {ratio:g} x the serving model's {s:.1f} ms "
                            f"+ {slack:g} ms")
    return failures, skipped


def compare(canary: ModelSignals, serving: ModelSignals | None, policy: SignalPolicy,
            reference: str = "this step") -> SignalVerdict:
    """The canary's figures judged against the serving model's (see the module docstring)."""
    if canary.answers < policy.min_samples:
        return SignalVerdict(canary, serving, reference if serving else "none", (),
                             (f"fewer than {policy.min_samples} successful answers from the new model "
                              f"({canary.answers}): not judged",))
    if serving is None or serving.answers < policy.min_samples:
        why = "no serving model answered" if serving is None else \
            f"the serving model gave fewer than {policy.min_samples} successful answers ({serving.answers})"
        bounds = "absolute bounds applied" if policy.max_length_rate is not None or \
            policy.max_empty_rate is not None else "reported, not judged"
        return SignalVerdict(canary, serving, "none", tuple(_absolute(canary, policy)), (f"{why}: {bounds}",))
    c, s = paired(canary, serving)
    skipped: list[str] = []
    failures: list[str] = []
    if c.answers and s.answers:
        failures += _rates(c, s, policy)
    else:
        skipped.append("no prompt answered by both models: rates and output length not compared")
        failures += _absolute(canary, policy)
    timing_failures, timing_skipped = _timings(canary, serving, policy)
    return SignalVerdict(canary, serving, reference, tuple(failures + timing_failures), tuple(skipped + timing_skipped))


__all__ = ["LENGTH", "ModelSignals", "PromptTally", "SignalPolicy", "SignalVerdict", "compare", "model_signals",
           "paired", "tpot_ms"]
