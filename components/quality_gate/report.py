"""The quality gate's diff report, Markdown and HTML: the verdict and the rule that made
it, the win rate with its interval, the pass rates, per-tag results, then every regressed
case side by side (prompt, both answers, the checks that failed, the judge's reasons).

Everything from the eval set, the endpoints or the judge is literal text: ``markdown.text``
/ ``markdown.fenced`` in Markdown; in HTML, data handed to the reports' one look
(``components/report_html.py``), which escapes it; secrets redacted by shape
(``smoke.scrub``) on the way out.
"""

from __future__ import annotations

from pathlib import Path

from tune2serve.components import markdown as md
from tune2serve.components.quality_gate.gate import CaseResult, EvalResult
from tune2serve.components.smoke_test.smoke import scrub


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(interval: list[float] | tuple[float, float] | None) -> str:
    return "-" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _headline(result: EvalResult) -> list[tuple[str, str]]:
    v = result.verdict
    rows = [("Verdict", v.verdict.upper()), ("Rule", v.rule), ("Candidate", result.candidate),
            ("Baseline", result.baseline or "none (a first promotion)"), ("Judge", result.judge or "none"),
            ("Eval set", f"{result.eval_set.source} (sha256 {result.eval_set.sha256}, {len(result.cases)} cases)"),
            ("Win rate (95 % Wilson interval)", f"{_rate(v.win_rate)} {_interval(v.interval)}"
                                                + (f", {v.deciding} judged case(s)" if result.judge else ""))]
    rows += [(k.replace("_", " "), f"{x:g}") for k, x in result.metrics.items()]
    return rows


def _tag_rows(result: EvalResult) -> list[list[str]]:
    return [[tag, str(t["cases"]), str(t["candidate_failed"]), "-" if t["baseline_failed"] is None else
             str(t["baseline_failed"]), str(t["regressed"]), f"{_rate(t['win_rate'])} {_interval(t['interval'])}"]
            for tag, t in result.tag_results().items()]


TAG_HEADER = ["tag", "cases", "candidate fails", "baseline fails", "regressed", "win rate (interval)"]


def _judge_lines(c: CaseResult) -> list[str]:
    if c.judgments is None:
        return []
    out = []
    for side, j in zip("AB", c.judgments):
        said = j.winner or f"no judgment ({j.error or 'unreadable answer: ' + repr(j.text[:200])})"
        out.append(f"candidate shown as {side}: {said}" + (f" — {j.reason}" if j.reason else ""))
    return out


def render_markdown(result: EvalResult) -> str:
    lines = [f"# Quality gate: {result.verdict.verdict.upper()}", "", "| | |", "|---|---|"]
    lines += [f"| {md.text(k)} | {md.text(v)} |" for k, v in _headline(result)]
    tags = _tag_rows(result)
    if tags:
        lines += ["", "## By tag", "", "| " + " | ".join(TAG_HEADER) + " |", "|---" * len(TAG_HEADER) + "|"]
        lines += ["| " + " | ".join(md.text(x) for x in row) + " |" for row in tags]
    regressed = result.regressed
    lines += ["", f"## Regressed cases ({len(regressed)} of {len(result.cases)})", ""]
    if not regressed:
        lines.append("None.")
    for c in regressed:
        lines += [f"### {md.text(c.case.name)} ({md.text(result.eval_set.source)}:{c.case.line})", ""]
        lines += [f"- {md.text(r)}" for r in c.regressions()]
        lines += ["", "Prompt:", "", md.fenced(c.case.question(), "text"), "",
                  "Candidate's answer:", "", md.fenced(c.candidate.text or c.candidate.error or "(none)", "text"), ""]
        if c.baseline is not None:
            lines += ["Baseline's answer:", "", md.fenced(c.baseline.text or c.baseline.error or "(none)", "text"), ""]
        lines += [f"- judge: {md.text(j)}" for j in _judge_lines(c)]
        lines.append("")
    return str(scrub("\n".join(lines))) + "\n"


TONES = {"promote": "pass", "hold": "warn", "reject": "fail"}


def render_html(result: EvalResult) -> str:
    """The same report in the HTML reports' one look (``components/report_html.py``):
    every value is passed as data and escaped there."""
    from tune2serve.components import report_html as rh

    v = result.verdict
    cards = [rh.Card("verdict", v.verdict, TONES.get(v.verdict, "")),
             rh.Card("win rate (95 % interval)", f"{_rate(v.win_rate)} {_interval(v.interval)}"),
             rh.Card("candidate pass rate", _rate(result.metrics.get("candidate_pass_rate"))),
             rh.Card("baseline pass rate", _rate(result.metrics.get("baseline_pass_rate"))),
             rh.Card("regressed cases", f"{len(result.regressed)} of {len(result.cases)}",
                     "fail" if result.regressed else "pass")]
    sections = [rh.Section("Rule", [rh.Para(v.rule, TONES.get(v.verdict, ""))], id="rule"),
                rh.Section("Run", [rh.Table(["", ""], [[k, x] for k, x in _headline(result)])], id="run")]
    tags = _tag_rows(result)
    if tags:
        sections.append(rh.Section("By tag", [rh.Table(TAG_HEADER, [list(r) for r in tags])], id="tags"))
    rows = []
    for c in result.regressed:
        base = "" if c.baseline is None else c.baseline.text or c.baseline.error or "(none)"
        why = "; ".join(c.regressions() + [f"judge: {j}" for j in _judge_lines(c)])
        rows.append(rh.Row([f"{c.case.name} ({result.eval_set.source}:{c.case.line})", rh.Code(c.case.question()),
                            rh.Code(c.candidate.text or c.candidate.error or "(none)"), rh.Code(base), why],
                           tone="fail", data={"case": c.case.name}))
    sections.append(rh.Section(f"Regressed cases ({len(rows)} of {len(result.cases)})",
                               [rh.Table(["case", "prompt", "candidate", "baseline", "failed checks / judge"], rows)]
                               if rows else ["None."], id="regressed"))
    notes = ["Verdict rule: components/quality_gate/POLICY.md. Win rate: each judged case's two orderings "
             "averaged (win 1, tie 1/2, loss 0), 95 % Wilson score interval over the cases judged in both orders.",
             f"Eval set {result.eval_set.source}, sha256 {result.eval_set.sha256}."]
    return str(scrub(rh.page(f"Quality gate: {v.verdict}", rh.Verdict(f"Quality gate: {v.verdict.upper()}",
                                                                         TONES.get(v.verdict, "info"), result.candidate),
                             cards, sections, notes, kind="quality-gate")))


NOT_EVALUATED_MD = "# Quality gate: not evaluated\n\nNo eval set was given: nothing was compared.\n"


def render_not_evaluated_html() -> str:
    """The page of a run given no eval set."""
    from tune2serve.components import report_html as rh

    return rh.page("Quality gate: not evaluated", rh.Verdict("Quality gate: not evaluated", "info"), [],
                   [rh.Section("Rule", ["No eval set was given: nothing was compared."])], kind="quality-gate")


def write_reports(result: EvalResult, folder: str | Path) -> tuple[Path, Path]:
    """``eval-report.md`` and ``eval-report.html`` in ``folder`` (made if absent)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    markdown_path, html_path = out / "eval-report.md", out / "eval-report.html"
    markdown_path.write_text(render_markdown(result), encoding="utf-8")
    html_path.write_text(render_html(result), encoding="utf-8")
    return markdown_path, html_path


__all__ = ["NOT_EVALUATED_MD", "render_html", "render_markdown", "render_not_evaluated_html", "write_reports"]
