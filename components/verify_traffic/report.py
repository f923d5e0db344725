"""The decision, with its evidence, as Markdown (KFP Markdown artifact, terminal) and as
a self-contained HTML page (inline CSS, an inline SVG latency chart, no scripts, no
external resources) that the Vertex AI Pipelines UI shows. Stable element ids:
``outcome``, ``evidence``, ``traffic-split``, ``latency-chart``, and per baked step
``bake-N`` (its table) and ``bake-chart-N`` (error rate and p95 of both models over the
bake, one point per Cloud Monitoring sample).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from tune2serve.components import markdown as md
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
          "With a bake, each step below 100% then holds the split and reads the endpoint's own metrics in Cloud "
          "Monitoring (prediction/online/response_count by response_code, prediction/online/prediction_latencies, "
          "per deployed_model_id) over the bake: the canary is rolled back when its error rate on real traffic "
          "exceeds the serving model's by more than the configured delta, when its p95 exceeds the configured "
          "ratio of theirs, or when it got too little traffic to judge (inconclusive).")


def _fmt(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{value:.0f}{unit}"


def _step_rows(step: StepResult) -> list[tuple[str, ...]]:
    rows = []
    for dm, m in step.models.items():
        role = "new" if dm == step.new_deployed_id else ("unattributed" if dm.startswith("(") else "serving")
        total = sum(x.requests for x in step.models.values()) or 1
        rows.append((dm, role, f"{step.configured_split.get(dm, 0)}%", f"{m.requests / total:.1%}", str(m.requests),
                     f"{m.error_rate:.1%}", _fmt(m.p50_ms, " ms"), _fmt(m.p95_ms, " ms")))
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
    for step in result.steps:
        t = step.test
        lines += [f"### Step {step.percent}% — {'passed' if step.passed else 'FAILED'}", "",
                  f"n = {t.n} (planned {step.plan.requests}, formula {step.plan.formula_requests or '–'}), "
                  f"new model answered {t.k} ({t.observed_share:.1%}), p-value {t.p_value:.3g} "
                  f"(significance {t.alpha})", "",
                  _row(_HEAD), "|" + "---|" * len(_HEAD)]
        lines += [_row(r) for r in _step_rows(step)]
        lines += [f"- {md.text(f)}" for f in step.failures] + [""]
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
    lines += ["## Method", "", METHOD, ""]
    return "\n".join(lines)


_BAKE_HEAD = ("model", "requests", "errors", "error rate", "p95")


def _bake_rows(bake: Any) -> list[tuple[str, ...]]:
    return [(role, str(w.requests), str(w.errors), f"{w.error_rate:.1%}", _fmt(w.p95_ms, " ms"))
            for role, w in (("canary", bake.canary), ("serving", bake.baseline))]


def _bake_timeline(step: StepResult) -> dict[str, list[tuple[float, float | None, float | None]]]:
    """Role → [(seconds into the bake, error rate, p95 ms)] per sample period."""
    bake = step.bake
    start = bake.window[0]
    out: dict[str, dict[float, list[float]]] = {"canary": {}, "serving": {}}
    for dm, series in bake.series.items():
        role = "canary" if dm == step.new_deployed_id else "serving"
        for c in series["response_count"]:
            slot = out[role].setdefault(c["start"], [0.0, 0.0, 0.0])
            slot[0] += c["count"]
            slot[1] += 0 if str(c["response_code"]).startswith("2") else c["count"]
        for d in series["prediction_latencies"]:
            slot = out[role].setdefault(d["start"], [0.0, 0.0, 0.0])
            slot[2] = max(slot[2], d["p95_ms"] or 0.0)
    return {role: [(t - start, (v[1] / v[0]) if v[0] else None, v[2] or None) for t, v in sorted(points.items())]
            for role, points in out.items()}


def bake_svg(step: StepResult, index: int, width: int = 640, height: int = 260) -> str:
    """Two panels over the bake: error rate (top) and p95 latency (bottom), the canary in
    red and the serving models in blue, one point per Cloud Monitoring sample."""
    lines = _bake_timeline(step)
    span = max([t for pts in lines.values() for t, _, _ in pts] + [step.bake.window[1] - step.bake.window[0], 1.0])
    top_ms = max([p for pts in lines.values() for _, _, p in pts if p] + [1.0])
    pad, panel = 44, (height - 50) / 2
    parts = [f'<svg id="bake-chart-{index}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="error rate and p95 latency over the bake">',
             f'<text x="{pad}" y="12" font-size="11">error rate (0-100%) — canary red, serving blue</text>',
             f'<text x="{pad}" y="{panel + 30:.0f}" font-size="11">p95 latency (max {top_ms:.0f} ms)</text>']
    for k, (label, y0) in enumerate((("error", 16.0), ("p95", panel + 34))):
        parts.append(f'<line x1="{pad}" y1="{y0 + panel - 8:.1f}" x2="{width - pad}" y2="{y0 + panel - 8:.1f}" '
                     'stroke="#888"/>')
        for role, colour in (("canary", "#d93025"), ("serving", "#3182bd")):
            pts = []
            for t, err, p95 in lines[role]:
                value = err if k == 0 else (p95 / top_ms if p95 else None)
                if value is None:
                    continue
                x = pad + (width - 2 * pad) * t / span
                y = y0 + (panel - 8) * (1 - value)
                pts.append(f"{x:.1f},{y:.1f}")
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"><title>{role} at '
                             f'{t:.0f} s: {label} {value * (100 if k == 0 else top_ms):.0f}'
                             f'{"%" if k == 0 else " ms"}</title></circle>')
            if len(pts) > 1:
                parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{colour}"/>')
    parts.append(f'<text x="{pad}" y="{height - 4}" font-size="10">seconds into the bake (0-{span:.0f})</text></svg>')
    return "".join(parts)


def latency_svg(steps: list[StepResult], width: int = 640, height: int = 220) -> str:
    """Grouped bars: p50 (light) and p95 (dark) per deployed model per step."""
    bars = [(f"{s.percent}%", dm, m.p50_ms or 0.0, m.p95_ms or 0.0)
            for s in steps for dm, m in s.models.items() if m.p95_ms is not None]
    top = max([b[3] for b in bars] + [1.0])
    pad, base = 40, height - 40
    slot = (width - 2 * pad) / max(1, len(bars))
    parts = [f'<svg id="latency-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="latency per deployed model and step">',
             f'<line x1="{pad}" y1="{base}" x2="{width - pad}" y2="{base}" stroke="#888"/>',
             f'<text x="{pad}" y="14" font-size="11">p95 max {top:.0f} ms (dark: p95, light: p50)</text>']
    for i, (label, dm, p50, p95) in enumerate(bars):
        x = pad + i * slot + slot * 0.15
        w = slot * 0.35
        for j, (value, colour) in enumerate(((p50, "#9ecae1"), (p95, "#3182bd"))):
            h = (base - 24) * value / top
            parts.append(f'<rect x="{x + j * w:.1f}" y="{base - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                         f'fill="{colour}"><title>{escape(dm)} at {label}: {value:.0f} ms</title></rect>')
        parts.append(f'<text x="{x:.1f}" y="{base + 14}" font-size="10">{escape(label)} {escape(dm[-6:])}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:960px}
#outcome{padding:1em;border-radius:6px;font-size:1.2em;font-weight:600}
.promoted,.verified{background:#e6f4ea;border:1px solid #34a853}
.rolled_back,.failed{background:#fce8e6;border:1px solid #d93025}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f1f3f4}td:first-child,th:first-child{text-align:left;font-family:monospace}
.fail{color:#d93025}code{background:#f1f3f4;padding:0 .2em}"""


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def html(result: VerifyResult) -> str:
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>verify-traffic: '
             f'{escape(result.outcome)}</title><style>{_CSS}</style></head><body>',
             f'<div id="outcome" class="{escape(result.outcome)}" data-outcome="{escape(result.outcome)}">'
             f'{escape(HEADLINES[result.outcome])}</div>',
             f"<p>Endpoint <code>{escape(result.endpoint)}</code>"
             + (f", model <code>{escape(result.model)}</code>" if result.model else "") + "</p>"]
    if result.reason:
        parts.append(f'<p class="fail">Reason: {escape(result.reason)}</p>')
    parts.append('<section id="evidence"><h2>Evidence</h2>')
    for step in result.steps:
        t = step.test
        parts.append(f'<h3>Step {step.percent}% — {"passed" if step.passed else "failed"}</h3>'
                     f"<p>n = {t.n} (planned {step.plan.requests}), new model answered {t.k} "
                     f"({t.observed_share:.1%}), p-value {t.p_value:.3g} at significance {t.alpha}</p>")
        parts.append(_table(_HEAD, _step_rows(step)))
        parts += [f'<p class="fail">{escape(f)}</p>' for f in step.failures]
        if step.bake is not None:
            b, i = step.bake, result.steps.index(step) + 1
            parts.append(f'<h4>Bake: {escape(b.verdict)} ({b.window[1] - b.window[0]:.0f} s of real traffic, '
                         f'Cloud Monitoring)</h4><div id="bake-{i}" data-verdict="{escape(b.verdict)}">'
                         + _table(_BAKE_HEAD, _bake_rows(b)) + "</div>" + bake_svg(step, i))
    if result.steps:
        parts.append("<h3>Latency</h3>" + latency_svg(result.steps))
    if result.rollback:
        parts.append(f"<h3>Rollback</h3><p>restored {escape(str(result.rollback['restored_split']))}, undeployed "
                     f"{escape(', '.join(result.rollback['undeployed']) or 'nothing')}</p>")
    parts.append("</section>")
    parts.append('<section id="traffic-split"><h2>Final traffic split</h2>'
                 + _table(("deployed model", "share"), [(k, f"{v}%") for k, v in result.traffic_split.items()])
                 + "</section>")
    if result.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in result.notes) + "</ul>")
    parts.append(f"<h2>Method</h2><p>{escape(METHOD)}</p></body></html>")
    return "".join(parts)


def write_reports(result: VerifyResult, markdown_path: str | Path, html_path: str | Path) -> None:
    Path(markdown_path).write_text(markdown(result), encoding="utf-8")
    Path(html_path).write_text(html(result), encoding="utf-8")
