"""The quality-gate step as a KFP component: a thin wrapper over ``step.run_gate_step``.

Never fails for a hold or a reject: it writes the reports and Metrics and outputs the
verdict and ``proceed`` (True for promote or "not evaluated"), which the DAG gates
verify-traffic on."""

from typing import NamedTuple

from kfp.dsl import HTML, Markdown, Metrics, Output

from tune2serve.components.step_component import step_component


@step_component
def quality_gate(
    candidate_endpoint: str, baseline_endpoint: str, project: str, region: str, eval_set: str,
    metrics: Output[Metrics], report_md: Output[Markdown], report_html: Output[HTML],
    judge_endpoint: str = "", judge_model: str = "", judge_prompt: str = "", eval_margin: float = 0.05,
    eval_delta: float = 0.05, eval_min_pass_rate: float = 0.9, eval_concurrency: int = 4,
    eval_case_timeout_s: float = 120.0,
) -> NamedTuple("GateOutputs", [("verdict", str), ("proceed", bool), ("eval_set_sha256", str), ("judge", str)]):  # type: ignore[valid-type]
    """Compares the candidate with the serving model on the eval set (components/quality_gate/POLICY.md).

    Args:
        candidate_endpoint: the endpoint deploy made (no user reaches it).
        baseline_endpoint: the serving model's endpoint; "" for a first promotion (pass rate alone).
        project: Google Cloud project.
        region: Vertex AI region.
        eval_set: JSON Lines text, or a gs:// URI / path of the file; "" skips the gate.
        judge_endpoint: a Vertex AI endpoint serving a judge model; "" for none.
        judge_model: the judge's model name; alone, a model through Vertex AI's OpenAI-compatible API.
        judge_prompt: the judge prompt's text; "" for the shipped one.
        eval_margin: deterministic-check margin (fraction of cases; at least 1 case).
        eval_delta: non-inferiority margin of the judged win rate.
        eval_min_pass_rate: without a baseline, the pass rate needed to promote.
        eval_concurrency: cases in flight at once.
        eval_case_timeout_s: the longest one request of a case may take.
    """
    from collections import namedtuple
    from pathlib import Path

    from tune2serve.components.quality_gate.report import (NOT_EVALUATED_MD, render_html, render_markdown,
                                                           render_not_evaluated_html)
    from tune2serve.components.quality_gate.step import run_gate_step

    out = run_gate_step(candidate_endpoint, baseline_endpoint, project, region, eval_set,
                        judge_endpoint=judge_endpoint, judge_model=judge_model, judge_prompt=judge_prompt,
                        margin=eval_margin, delta=eval_delta, min_pass_rate=eval_min_pass_rate,
                        concurrency=eval_concurrency, case_timeout_s=eval_case_timeout_s)
    Path(report_md.path).write_text(render_markdown(out.result) if out.result else NOT_EVALUATED_MD, encoding="utf-8")
    Path(report_html.path).write_text(render_html(out.result) if out.result else render_not_evaluated_html(),
                                      encoding="utf-8")
    for name, value in (out.result.metrics if out.result else {}).items():
        metrics.log_metric(name, value)
    return namedtuple("GateOutputs", ["verdict", "proceed", "eval_set_sha256", "judge"])(
        out.verdict, out.proceed, out.eval_set_sha256, out.judge)
