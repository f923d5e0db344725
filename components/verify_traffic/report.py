"""The decision, with its evidence, as Markdown (KFP Markdown artifact, terminal) and as
a self-contained HTML page in the reports' one look (``report_html``: banner, cards,
tables; the charts of ``chart.py``, inline SVG) that the Vertex AI Pipelines UI shows.
Each model is named by its role — candidate or serving — and its share at each step, and
the thresholds the run was judged by are stated (``VerifyResult.thresholds``). Stable
element ids: ``outcome`` (the banner), ``summary``, ``evidence``, ``step-N``,
``traffic-chart``, ``latency-chart``, ``models``, ``traffic-split``, ``thresholds``, and
per baked step ``bake-N`` (its section, ``data-verdict``) and ``bake-chart-N``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tune2serve.components import markdown as md
from tune2serve.components.report_html import Block, Card, Items, Para, Row, Section, Table, Verdict, page
from tune2serve.components.verify_traffic import chart
from tune2serve.components.verify_traffic.checks import StepResult
from tune2serve.components.verify_traffic.verify import VerifyResult

HEADLINES = {
    "promoted": "Promoted: the new model serves 100% of the traffic",
    "verified": "Verified: the endpoint serves 100% on healthy replicas and answers",
    "rolled_back": "Rolled back: the model that served before serves again",
    "failed": "Failed: see the reason below",
}
METHOD = ("Each step sends real requests to the endpoint's dedicated data plane and counts which deployed model "
          "answered (X-Vertex-AI-Deployed-Model-Id). The new model's share is tested against the configured share "
          "with a two-sided exact binomial test; n is chosen so the test detects a deviation of half the canary "
          "share with power 0.9 (normal-approximation formula, capped). The new model's error rate may exceed the "
          "serving model's by at most 2 points, and its p95 latency at most 3x the serving model's plus 250 ms. "
          "Each request is a streamed chat completion of one of a fixed set of short prompts; per deployed model, "
          "the share of answers cut off at max_tokens (finish_reason length), of empty answers, the output length, "
          "time to first token and time per output token are compared with the serving model's, prompt by prompt "
          "(margins in docs/OPERATIONS.md): a canary that never stops is rolled back even when every answer is a "
          "200. "
          "With a bake, each step below 100% then holds the split and reads the endpoint's own metrics in Cloud "
          "Monitoring (prediction/online/response_count by response_code, prediction/online/prediction_latencies, "
          "per deployed_model_id) over the bake: the canary is rolled back when its error rate on real traffic "
          "exceeds the serving model's by more than the configured delta, when its p95 exceeds the configured "
          "ratio of theirs, or when it got too little traffic to judge (inconclusive).")


def _fmt(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{value:.0f}{unit}"


def names(result: VerifyResult) -> dict[str, str]:
    """Deployed id → role (candidate, serving, serving 2...), as every table and chart names it."""
    return chart.model_names(result.steps, result.new_deployed_id, result.mode == "promotion")


def _step_rows(step: StepResult, roles: Mapping[str, str]) -> list[tuple[str, ...]]:
    rows = []
    for dm, m in step.models.items():
        total = sum(x.requests for x in step.models.values()) or 1
        rows.append((dm, roles.get(dm, "serving"), f"{step.configured_split.get(dm, 0)}%", f"{m.requests / total:.1%}",
                     str(m.requests), f"{m.error_rate:.1%}", _fmt(m.p50_ms, " ms"), _fmt(m.p95_ms, " ms")))
    return rows


def threshold_rows(thresholds: Mapping[str, float]) -> list[tuple[str, str]]:
    """The limits the run was judged by, in words (empty when the result does not record them)."""
    t = thresholds
    rows = []
    if "significance" in t:
        rows += [("split test significance (two-sided exact binomial on the candidate's share)", f"{t['significance']:g}"),
                 ("max error-rate increase, candidate vs serving, per step",
                  f"{t['max_error_rate_increase'] * 100:g} points"),
                 ("max candidate p95 latency, per step",
                  f"{t['max_latency_p95_ratio']:g} x serving p95 + {t['latency_slack_ms']:g} ms"),
                 ("min successful answers on each side for the latency check", f"{t['min_latency_samples']:g}")]
    if "bake_s" in t:
        rows.append(("bake on real traffic, each step below 100 %", f"{t['bake_s']:g} s" if t["bake_s"] else "off"))
        if t["bake_s"]:
            rows += [("bake: max error-rate delta", f"{t['bake_max_error_rate_delta'] * 100:g} points"),
                     ("bake: max p95 latency ratio", f"{t['bake_max_latency_ratio']:g} x serving"),
                     ("bake: min candidate requests", f"{t['bake_min_requests']:g}")]
    return rows


_HEAD = ("deployed model", "role", "configured", "observed", "n", "errors", "p50", "p95")


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(md.text(c) for c in cells) + " |"


def markdown(result: VerifyResult) -> str:
    """Resource names, deployed-model ids, reasons and notes come from the endpoint and
    from error messages: each through ``markdown.text`` (literal text)."""
    lines = [f"# verify-traffic: {result.outcome}", "", f"**{HEADLINES[result.outcome]}**", "",
             f"- endpoint: {md.text(result.endpoint)}"]
    if result.model:
        lines.append(f"- model: {md.text(result.model)}")
    if result.reason:
        lines.append(f"- reason: {md.text(result.reason)}")
    lines += ["", "## Evidence", ""]
    roles = names(result)
    for step in result.steps:
        t = step.test
        lines += [f"### Step {step.percent}% — {'passed' if step.passed else 'FAILED'}", "",
                  f"n = {t.n} (planned {step.plan.requests}, formula {step.plan.formula_requests or '–'}), "
                  f"new model answered {t.k} ({t.observed_share:.1%}), p-value {t.p_value:.3g} "
                  f"(significance {t.alpha})", "",
                  _row(_HEAD), "|" + "---|" * len(_HEAD)]
        lines += [_row(r) for r in _step_rows(step, roles)]
        lines += [f"- {md.text(f)}" for f in step.failures] + [""]
        if step.signals is not None:
            lines += [f"LLM signals: **{'passed' if step.signals.passed else 'FAILED'}**", "", _row(_SIGNAL_HEAD),
                      "|" + "---|" * len(_SIGNAL_HEAD)] + [_row(r) for r in _signal_rows(step.signals)]
            lines += [f"- not compared: {md.text(x)}" for x in step.signals.skipped] + [""]
        if step.bake is not None:
            b = step.bake
            lines += [f"Bake {b.window[1] - b.window[0]:.0f} s on real traffic (Cloud Monitoring): "
                      f"**{md.text(b.verdict)}**", "", _row(_BAKE_HEAD), "|" + "---|" * len(_BAKE_HEAD)]
            lines += [_row(r) for r in _bake_rows(b)] + [""]
    if result.rollback:
        lines += ["## Rollback", "", f"restored {md.text(result.rollback['restored_split'])}, undeployed "
                  f"{md.text(', '.join(result.rollback['undeployed']) or 'nothing')}", ""]
    lines += ["## Final traffic split", ""] + [f"- {md.text(k)}: {md.text(v)}%" for k, v in result.traffic_split.items()]
    lines += [""]
    if result.notes:
        lines += ["## Notes", ""] + [f"- {md.text(n)}" for n in result.notes] + [""]
    if result.thresholds:
        lines += ["## Thresholds applied", "", "| threshold | value |", "|---|---|"]
        lines += [_row(r) for r in threshold_rows(result.thresholds)] + [""]
    lines += ["## Method", "", METHOD, ""]
    return "\n".join(lines)


_BAKE_HEAD = ("model", "requests", "errors", "error rate", "p95")
_SIGNAL_HEAD = ("model", "answers", "cut off (length)", "empty", "output tokens", "TTFT p95", "TPOT p50")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _signal_rows(signals: Any) -> list[tuple[str, ...]]:
    """The LLM signals of the step's answers: the new model, and the serving model's
    figures it was compared with (from this step or an earlier one)."""
    rows = []
    for role, figures in (("new", signals.canary), (f"serving ({signals.reference})", signals.serving)):
        if figures is not None:
            d = figures.as_dict()
            rows.append((role, str(d["answers"]), _pct(d["length_rate"]), _pct(d["empty_rate"]),
                         "–" if d["mean_output_tokens"] is None else f"{d['mean_output_tokens']:.1f}",
                         _fmt(d["ttft_p95_ms"], " ms"),
                         "–" if d["tpot_p50_ms"] is None else f"{d['tpot_p50_ms']:.1f} ms"))
    return rows


def _bake_rows(bake: Any) -> list[tuple[str, ...]]:
    return [(role, str(w.requests), str(w.errors), f"{w.error_rate:.1%}", _fmt(w.p95_ms, " ms"))
            for role, w in (("candidate", bake.canary), ("serving", bake.baseline))]


def _step_section(result: VerifyResult, i: int, step: StepResult, roles: Mapping[str, str]) -> Section:
    """One step: the split test in words, the per-model table, failures, LLM signals, the bake."""
    t = step.test
    who = "the candidate" if result.mode == "promotion" else "the checked model"
    blocks: list[Block] = [
        f"n = {t.n} (planned {step.plan.requests}), {who} answered {t.k} ({t.observed_share:.1%}) against a "
        f"configured {step.percent} %, p-value {t.p_value:.3g} at significance {t.alpha:g}",
        Table(_HEAD, [Row(r, tone="fail" if not step.passed and r[1] == "candidate" else "", data={"model": r[0]})
                      for r in _step_rows(step, roles)]),
        *(Para(f, "fail") for f in step.failures)]
    if step.signals is not None:
        verdict = "passed" if step.signals.passed else "failed"
        blocks.append(Section(f"LLM signals: {verdict}", [Table(_SIGNAL_HEAD, _signal_rows(step.signals)),
                                                          *(f"not compared: {x}" for x in step.signals.skipped)],
                              id=f"signals-{i}", data={"verdict": verdict}))
    if step.bake is not None:
        b = step.bake
        blocks.append(Section(f"Bake: {b.verdict} ({b.window[1] - b.window[0]:.0f} s of real traffic, Cloud Monitoring)",
                              [Table(_BAKE_HEAD, _bake_rows(b)),
                               chart.bake_svg(step, i, roles, result.model, result.thresholds)],
                              id=f"bake-{i}", data={"verdict": b.verdict}))
    title = (f"Step {i}: candidate at {step.percent} %" if result.mode == "promotion" else f"Check {i}") + \
        f" — {'passed' if step.passed else 'failed'}"
    return Section(title, blocks, id=f"step-{i}", data={"passed": str(step.passed).lower()})


def _split_text(split: Mapping[str, int], roles: Mapping[str, str]) -> str:
    """"candidate 100 %": each deployed model by its role (by its id when it had none in the steps)."""
    return ", ".join(f"{roles.get(dm, dm)} {share} %" for dm, share in split.items()) or "none"


def _cards(result: VerifyResult, roles: Mapping[str, str]) -> list[Card]:
    tone = "pass" if result.ok else "fail"
    cards = [Card("Outcome", result.outcome.replace("_", " "), tone), Card("Endpoint", result.endpoint)]
    if result.model:
        cards.append(Card("Candidate model", result.model))
    cards += [Card("Steps", " → ".join(f"{s.percent} %" for s in result.steps) or "none run"),
              Card("Traffic now", _split_text(result.traffic_split, roles))]
    if result.previous_split:
        cards.append(Card("Traffic before", _split_text(result.previous_split, roles)))
    return cards


def _model_rows(result: VerifyResult, roles: Mapping[str, str]) -> list[tuple[str, ...]]:
    return [(role, dm, result.model if role == "candidate" and result.model else "")
            for dm, role in sorted(roles.items(), key=lambda kv: (kv[1] != "candidate", kv[1]))]


def html(result: VerifyResult) -> str:
    """The page: banner (``#outcome``), cards, then the evidence per step with its charts,
    the models by role, the final split, the thresholds applied, notes; the method as a
    footnote. Resource names, ids, reasons and notes are values: ``report_html`` escapes them."""
    roles = names(result)
    evidence: list[Block] = [Para(f"Reason: {result.reason}", "fail")] if result.reason else []
    evidence += [_step_section(result, i, s, roles) for i, s in enumerate(result.steps, 1)]
    if result.steps:
        evidence.append(Section("Traffic per step", [chart.share_svg(result.steps, roles, result.model,
                                                                     result.thresholds, result.mode == "promotion")],
                                id="traffic"))
        evidence.append(Section("Latency", [chart.latency_svg(result.steps, roles, result.model, result.thresholds,
                                                              result.mode == "promotion")], id="latency"))
    if result.rollback:
        evidence.append(Section("Rollback", [f"restored {_split_text(result.rollback['restored_split'], roles)}; "
                                             f"undeployed {', '.join(result.rollback['undeployed']) or 'nothing'}"],
                                id="rollback"))
    sections = [Section("Evidence", evidence or ["No step ran."], id="evidence"),
                Section("Models", [Table(("role", "deployed model", "model"), _model_rows(result, roles))],
                        id="models"),
                Section("Final traffic split", [Table(("deployed model", "share", "role"), [
                    (dm, f"{share}%", roles.get(dm, "")) for dm, share in result.traffic_split.items()])],
                        id="traffic-split"),
                Section("Thresholds applied", [Table(("threshold", "value"), threshold_rows(result.thresholds))]
                        if result.thresholds else ["Not recorded for this result."], id="thresholds")]
    if result.notes:
        sections.append(Section("Notes", [Items(result.notes)], id="notes"))
    banner = Verdict(HEADLINES[result.outcome], "pass" if result.ok else "fail", detail=result.endpoint,
                     id="outcome", data={"outcome": result.outcome})
    return page(f"verify-traffic: {result.outcome}", banner, _cards(result, roles), sections,
                footnotes=[METHOD], kind="verify-traffic")


def write_reports(result: VerifyResult, markdown_path: str | Path, html_path: str | Path) -> None:
    Path(markdown_path).write_text(markdown(result), encoding="utf-8")
    Path(html_path).write_text(html(result), encoding="utf-8")
