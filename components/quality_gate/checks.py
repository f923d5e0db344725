"""The deterministic checks of one answer to one eval case — the same checks for the
candidate and for the baseline, so a difference between them is the models', not ours.

    answered            the request succeeded (after retries under the one retry policy)
    not_empty           the text is not blank
    stopped             finish_reason is "stop": the model ended by itself, not cut off at
                        max_tokens ("length") — a tuned model that lost its end-of-turn
                        token never stops, and every HTTP answer is still 200
    no_template_tokens  no raw chat-template token in the text (<|im_start|>, <|eot_id|>,
                        </s>, ...): a sign of a broken chat template or tokenizer
    expect              the case's regex occurs in the text (time-limited)
    reference           the text equals the case's reference, exactly or once normalised
                        (case, whitespace, the punctuation around it)
    json                the text (or the one fenced block it is) parses as JSON and fits
                        the case's json_schema (the subset of schema.py)

A case's checks are those its fields ask for plus the four above. A request that failed
fails ``answered`` alone: the others have no text to look at.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

from tune2serve.components import user_input
from tune2serve.components.quality_gate import schema
from tune2serve.components.quality_gate.evalset import EvalCase

# Raw tokens of the common chat templates (ChatML/Qwen, Llama 3, Llama 2/Mistral, Gemma,
# Phi, GPT-style end of text): none belongs in the text of an answer.
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|begin_of_text|>", "<|end_of_text|>", "<|endoftext|>", "<|assistant|>", "<|user|>",
                   "<|system|>", "<|end|>", "<start_of_turn>", "<end_of_turn>", "</s>", "<s>", "[INST]", "[/INST]")
_FENCED = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n\s*```\s*$", re.S)
_EDGE_PUNCT = " \t\n.,;:!?\"'`()[]{}«»“”‘’"


@dataclass(frozen=True)
class Answer:
    """One endpoint's answer to one case (``error`` set when no answer came)."""

    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    latency_s: float = 0.0
    attempts: int = 0
    deployed_model_id: str = ""


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str = "ok"


def normalised(text: str) -> str:
    """Case-folded, Unicode-normalised (NFKC), whitespace collapsed, punctuation trimmed
    from both ends: "The capital is Paris." and "the capital is paris" are equal."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return folded.strip(_EDGE_PUNCT)


def json_text(text: str) -> str:
    """The JSON an answer carries: the whole text, or the one fenced block it consists of."""
    fenced = _FENCED.match(text)
    return fenced.group(1) if fenced else text


def _expect(case: EvalCase, text: str) -> CheckResult:
    pattern = case.pattern or user_input.compile_pattern(case.expect)
    try:
        found = pattern.search(text)
    except user_input.PatternTimeout as e:
        return CheckResult("expect", False, f"the \"expect\" pattern {e}")
    return CheckResult("expect", found, "ok" if found else f"expected a match for /{user_input.shown(case.expect or '')}/")


def _reference(reference: str, text: str) -> CheckResult:
    if text == reference:
        return CheckResult("reference", True, "exact")
    if normalised(text) == normalised(reference):
        return CheckResult("reference", True, "equal once normalised")
    return CheckResult("reference", False, "differs from the reference, even once normalised")


def _json(json_schema: object, text: str) -> CheckResult:
    try:
        value = json.loads(json_text(text))
    except (json.JSONDecodeError, RecursionError) as e:
        message = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
        return CheckResult("json", False, f"not JSON ({message})")
    found = schema.problems(json_schema, value)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return CheckResult("json", False, f"JSON that does not fit the schema: {found[0]}{more}")
    return CheckResult("json", True)


def _stopped(finish_reason: str | None) -> CheckResult:
    if finish_reason == "stop":
        return CheckResult("stopped", True)
    if finish_reason == "length":
        return CheckResult("stopped", False, "cut off at max_tokens (finish_reason \"length\"): it did not stop by itself")
    if not finish_reason:
        return CheckResult("stopped", False, "the answer carries no finish_reason")
    return CheckResult("stopped", False, f"finish_reason {user_input.shown(finish_reason)!r}, not \"stop\"")


def check_answer(case: EvalCase, answer: Answer) -> list[CheckResult]:
    """Every check ``case`` asks of ``answer``, in the order of the module docstring."""
    if answer.error is not None:
        return [CheckResult("answered", False, f"request failed: {answer.error}")]
    text = answer.text
    results = [CheckResult("answered", True),
               CheckResult("not_empty", bool(text.strip()), "ok" if text.strip() else "the answer is empty"),
               _stopped(answer.finish_reason)]
    leaked = [t for t in TEMPLATE_TOKENS if t in text]
    results.append(CheckResult("no_template_tokens", not leaked,
                               "ok" if not leaked else f"raw chat-template token(s) in the text: {', '.join(leaked)}"))
    if case.expect is not None:
        results.append(_expect(case, text))
    if case.reference is not None:
        results.append(_reference(case.reference, text))
    if case.json_schema is not None:
        results.append(_json(case.json_schema, text))
    return results


def failed(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if not r.passed]


__all__ = ["Answer", "CheckResult", "TEMPLATE_TOKENS", "check_answer", "failed", "json_text", "normalised"]
