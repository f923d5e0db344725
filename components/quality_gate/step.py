"""The quality gate as a pipeline step: what the KFP component calls (component.py stays
thin), testable without kfp.

The step always runs (between smoke-test and verify-traffic). With ``eval_set`` empty it
evaluates nothing and lets the promotion go on (verdict "": not evaluated); otherwise it
runs the gate with the production endpoint as the baseline ("" for a first promotion).
It never fails for a hold or a reject: it outputs the verdict (and ``proceed``), which
verify-traffic takes as its ``quality_verdict`` and promotes nothing after a hold or a
reject unless ``force_promote`` overrides it, audited (components/verify_traffic/
override.py); a failed step would hide the verdict from the steps after it. The verdict,
the eval set's sha256 and the judge go into the promotion record.

``eval_set`` is the JSON Lines text itself, or the gs:// URI or local path of such a file
(read through the one storage abstraction, its size checked before reading).
"""

from __future__ import annotations

from dataclasses import dataclass

from tune2serve.components import user_input
from tune2serve.components.errors import UsageError
from tune2serve.components.quality_gate import verdict as vd
from tune2serve.components.quality_gate.evalset import EvalSet, parse_eval_set
from tune2serve.components.quality_gate.gate import EvalResult, GateRequest, GateSettings, run_eval

NOT_EVALUATED = ""  # the verdict output when no eval set was given (verify-traffic: no verdict)
PROCEED = ("promote", NOT_EVALUATED)


@dataclass(frozen=True)
class StepOutcome:
    verdict: str
    proceed: bool
    eval_set_sha256: str
    judge: str
    result: EvalResult | None


def is_location(value: str) -> bool:
    """A gs:// URI or a path, rather than JSON Lines text (which starts with ``{`` or ``#``)."""
    first = value.lstrip()[:1]
    return bool(value.strip()) and first not in ("{", "#") and "\n" not in value.strip()


def read_eval_set_param(value: str, name: str = "eval_set") -> EvalSet:
    """The eval set a pipeline parameter gives: the text, or the file it names."""
    if not is_location(value):
        return parse_eval_set(value, f"{name} parameter")
    from tune2serve.components.checkpoint.storage import open_folder

    parent, _, base = value.rstrip("/").rpartition("/")
    if not base:
        raise UsageError(f"{name} {value!r}: name a JSON Lines file (gs://BUCKET/PATH.jsonl or a path)")
    folder = open_folder(parent or ".")
    if not folder.has(base):
        raise UsageError(f"{name} {value}: no such file", file=value)
    size = folder.size(base)
    if size > user_input.MAX_JSONL_BYTES:
        raise UsageError(f"{name} {value}: {size} bytes is above the {user_input.MAX_JSONL_BYTES}-byte limit",
                         file=value)
    try:
        text = folder.read_bytes(base).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{name} {value}: not UTF-8 text ({e.reason} at byte {e.start})", file=value) from e
    return parse_eval_set(text, value)


def run_gate_step(candidate: str, baseline: str, project: str, region: str, eval_set: str, *, judge_endpoint: str = "",
                  judge_model: str = "", judge_prompt: str = "", margin: float = vd.DEFAULT_MARGIN,
                  delta: float = vd.DEFAULT_DELTA, min_pass_rate: float = vd.DEFAULT_MIN_PASS_RATE,
                  concurrency: int = 4, case_timeout_s: float = 120.0) -> StepOutcome:
    """The step's work: the parameters checked (ranges), the eval set read, the gate run."""
    from tune2serve.components import ranges

    ranges.check_parameters(eval_margin=margin, eval_delta=delta, eval_min_pass_rate=min_pass_rate)
    ranges.EVAL_CONCURRENCY.check(concurrency, "eval_concurrency")
    ranges.EVAL_CASE_TIMEOUT_S.check(case_timeout_s, "eval_case_timeout_s")
    if not eval_set.strip():
        return StepOutcome(NOT_EVALUATED, True, "", "", None)
    cases = read_eval_set_param(eval_set)
    request = GateRequest(candidate, baseline, project, region, judge_endpoint, judge_model, judge_prompt or None)
    settings = GateSettings(vd.Settings(margin, delta, min_pass_rate), concurrency, case_timeout_s)
    result = run_eval(request, cases, settings)
    v = result.verdict.verdict
    return StepOutcome(v, v in PROCEED, cases.sha256, result.judge or "", result)


__all__ = ["NOT_EVALUATED", "StepOutcome", "is_location", "read_eval_set_param", "run_gate_step"]
