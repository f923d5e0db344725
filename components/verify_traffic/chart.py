"""The verify-traffic report's charts, as inline SVG styled by the reports' one stylesheet
(``report_html``: classes ``serving``, ``candidate``, ``axis``, ``tick``, ``limit``).

Each model is named by its role in the promotion — ``candidate`` (the model being
promoted) or ``serving`` (what served before; ``serving 1``, ``serving 2`` when several)
— with its configured share at that step: the serving model at 90 % is "serving 90 %".
Every chart has axes with ticks, the values written on the marks, a legend naming the full
deployed-model ids, and the thresholds that applied to this run. Every value from the
endpoint (ids, resource names) goes through ``report_html.esc``.

Stable hooks: ``#traffic-chart``, ``#latency-chart``, ``#bake-chart-N``; each bar is a
``rect.bar`` with ``data-model`` (the deployed id), ``data-value`` and, for latency,
``data-metric`` (p50/p95); each limit line is ``line.limit`` with ``data-value``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from tune2serve.components.report_html import Markup, esc
from tune2serve.components.verify_traffic.checks import UNATTRIBUTED, StepResult

WIDTH = 760
LEFT, RIGHT = 70, 24  # plot margins: room for the y axis's tick labels
CAPTION_CHARS = 100  # at 11 px, about 6 px a character: a caption line stays inside WIDTH - LEFT


def model_names(steps: Sequence[StepResult], new_deployed_id: str, promotion: bool) -> dict[str, str]:
    """Deployed id → its role: ``candidate`` for the model a promotion brings in,
    ``serving`` for the others (numbered when there are several), ``unattributed`` for
    answers no deployed model claimed. A standalone check has only serving models."""
    ids = sorted({dm for s in steps for dm in (*s.configured_split, *s.models)})
    serving = [dm for dm in ids if dm != UNATTRIBUTED and not (promotion and dm == new_deployed_id)]
    names = {dm: ("serving" if len(serving) == 1 else f"serving {i}") for i, dm in enumerate(serving, 1)}
    if promotion and new_deployed_id in ids:
        names[new_deployed_id] = "candidate"
    if UNATTRIBUTED in ids:
        names[UNATTRIBUTED] = "unattributed"
    return names


def role_class(name: str) -> str:
    return {"candidate": "candidate", "unattributed": "other"}.get(name, "serving")


def label(name: str, step: StepResult, dm: str) -> str:
    """"serving 90 %": the role and the share the step configured for that model."""
    return name if name == "unattributed" else f"{name} {step.configured_split.get(dm, 0)} %"


def ordered(step: StepResult, names: Mapping[str, str]) -> list[str]:
    """The step's models, serving first, then the candidate, then unattributed answers."""
    rank = {"candidate": 1, "unattributed": 2}
    ids = set(step.configured_split) | set(step.models)
    return sorted(ids, key=lambda dm: (rank.get(names.get(dm, ""), 0), names.get(dm, dm)))


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0, then round steps (1, 2 or 5 × 10^k) up to the first at or above ``top``."""
    top = max(top, 1e-9)
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [step * i for i in range(math.ceil(top / step - 1e-9) + 1)]


def _num(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _points(value: float) -> str:
    """An error-rate difference in percentage points: 0.02 → "2 points"."""
    return f"{value * 100:g} point{'s' * (round(value * 100, 9) != 1)}"


def legend(names: Mapping[str, str], model: str | None, y: float) -> tuple[list[str], float]:
    """One line per model: a swatch, its role and its full deployed-model id (the
    candidate's Model resource too); returns the SVG parts and the y after them."""
    parts = []
    for dm, name in sorted(names.items(), key=lambda kv: (kv[1] != "candidate", kv[1])):
        what = "answers no deployed model claimed" if dm == UNATTRIBUTED else f"deployed model {dm}"
        if name == "candidate" and model:
            what += f" (Model {model})"
        parts.append(f'<rect x="{LEFT}" y="{y - 9:.1f}" width="10" height="10" class="{role_class(name)}"/>'
                     f'<text x="{LEFT + 16}" y="{y:.1f}" class="legend" data-model="{esc(dm)}">'
                     f"{esc(name)}: {esc(what)}</text>")
        y += 16
    return parts, y


def _captions(lines: Sequence[str], y: float) -> tuple[list[str], float]:
    """Small print under a chart, folded to fit its width (SVG text does not wrap)."""
    parts = []
    for line in (folded for text in lines for folded in textwrap.wrap(text, CAPTION_CHARS)):
        parts.append(f'<text x="{LEFT}" y="{y:.1f}" class="thresholds">{esc(line)}</text>')
        y += 15
    return parts, y


def _svg(element_id: str, title: str, height: float, parts: Sequence[str]) -> Markup:
    return Markup(f'<svg id="{esc(element_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
                  f'width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
                  f'aria-label="{esc(title)}"><text x="{LEFT}" y="18" class="title">{esc(title)}</text>'
                  + "".join(parts) + "</svg>")


def share_svg(steps: Sequence[StepResult], names: Mapping[str, str], model: str | None,
              thresholds: Mapping[str, float], promotion: bool = True) -> Markup:
    """Per step, one horizontal bar per model: the share of the step's requests it
    answered (written at the bar's end), a tick at the share the step configured, the
    model named "serving 90 %" / "candidate 10 %"."""
    left, row, plot_w = 200, 22, WIDTH - 200 - 170
    parts: list[str] = []
    y = 40.0
    for i, step in enumerate(steps, 1):
        total = sum(m.requests for m in step.models.values()) or 1
        what = f"step {i}: candidate at {step.percent} %" if promotion else f"check {i}: {step.percent} % configured"
        parts.append(f'<text x="8" y="{y + 4:.1f}" class="step">{what} '
                     f"(n = {step.test.n}, p = {step.test.p_value:.3g})</text>")
        y += 12
        for dm in ordered(step, names):
            name = names.get(dm, dm)
            observed = step.models[dm].requests / total if dm in step.models else 0.0
            configured = step.configured_split.get(dm, 0) / 100
            w = plot_w * observed
            parts.append(f'<text x="{left - 8}" y="{y + 15:.1f}" text-anchor="end" class="model-label" '
                         f'data-model="{esc(dm)}">{esc(label(name, step, dm))}</text>'
                         f'<rect x="{left}" y="{y + 4:.1f}" width="{w:.1f}" height="{row - 8}" '
                         f'class="bar {role_class(name)}" data-model="{esc(dm)}" data-value="{observed:.4f}">'
                         f"<title>{esc(name)} (deployed model {esc(dm)}) at step {i}: answered "
                         f"{observed:.1%}, configured {configured:.0%}</title></rect>"
                         f'<line x1="{left + plot_w * configured:.1f}" y1="{y + 1:.1f}" '
                         f'x2="{left + plot_w * configured:.1f}" y2="{y + row - 1:.1f}" class="axis expected" '
                         f'data-value="{configured:.2f}"/>'
                         f'<text x="{left + w + 6:.1f}" y="{y + 15:.1f}" class="value">answered {observed:.1%}'
                         f" ({step.models[dm].requests if dm in step.models else 0})</text>")
            y += row
        y += 10
    axis_y = y
    parts.append(f'<line x1="{left}" y1="{axis_y:.1f}" x2="{left + plot_w}" y2="{axis_y:.1f}" class="axis"/>')
    for tick in (0, 25, 50, 75, 100):
        x = left + plot_w * tick / 100
        parts.append(f'<line x1="{x:.1f}" y1="{axis_y:.1f}" x2="{x:.1f}" y2="{axis_y + 4:.1f}" class="axis"/>'
                     f'<text x="{x:.1f}" y="{axis_y + 16:.1f}" text-anchor="middle" class="tick">{tick} %</text>')
    parts.append(f'<text x="{left}" y="{axis_y + 32:.1f}" class="axis-title">share of the step\'s requests '
                 "each model answered (bar) and the share configured for it (tick)</text>")
    more, y = legend(names, model, axis_y + 54)
    significance = thresholds.get("significance")
    notes, y = _captions([f"split test: two-sided exact binomial on the candidate's share, significance "
                          f"{significance:g}" if significance is not None else "split test: thresholds not recorded"],
                         y + 4)
    return _svg("traffic-chart", "traffic per step: which model answered", y + 4, parts + more + notes)


def latency_limit(step: StepResult, thresholds: Mapping[str, float]) -> float | None:
    """The candidate's p95 bound at this step: ratio × the serving models' p95 + slack."""
    ratio, slack = thresholds.get("max_latency_p95_ratio"), thresholds.get("latency_slack_ms")
    if ratio is None or slack is None or step.baseline is None or step.baseline.p95_ms is None:
        return None
    return ratio * step.baseline.p95_ms + slack


def latency_svg(steps: Sequence[StepResult], names: Mapping[str, str], model: str | None,
                thresholds: Mapping[str, float], promotion: bool) -> Markup:
    """Per step and model, p50 (light) and p95 (dark) bars with their values, under each
    pair the model's role and share; a dashed line at the candidate's p95 limit."""
    groups = [(i, s, [dm for dm in ordered(s, names) if dm in s.models and s.models[dm].p95_ms is not None])
              for i, s in enumerate(steps, 1)]
    limits = {i: latency_limit(s, thresholds) if promotion and s.percent < 100 else None for i, s, _ in groups}
    top = max([s.models[dm].p95_ms or 0.0 for _, s, dms in groups for dm in dms]
              + [v for v in limits.values() if v is not None] + [1.0])
    ticks = nice_ticks(top)
    top_tick = ticks[-1]
    plot_top, plot_h = 40.0, 200.0
    base = plot_top + plot_h
    slots = sum(max(1, len(dms)) for _, _, dms in groups) or 1
    slot = (WIDTH - LEFT - RIGHT) / slots
    parts = [f'<line x1="{LEFT}" y1="{plot_top:.1f}" x2="{LEFT}" y2="{base:.1f}" class="axis"/>',
             f'<line x1="{LEFT}" y1="{base:.1f}" x2="{WIDTH - RIGHT}" y2="{base:.1f}" class="axis"/>',
             f'<text x="14" y="{plot_top + plot_h / 2:.1f}" transform="rotate(-90 14 {plot_top + plot_h / 2:.1f})" '
             'text-anchor="middle" class="axis-title">latency (ms)</text>']

    def y_of(value: float) -> float:
        return base - plot_h * value / top_tick

    for tick in ticks:
        parts.append(f'<line x1="{LEFT}" y1="{y_of(tick):.1f}" x2="{WIDTH - RIGHT}" y2="{y_of(tick):.1f}" '
                     f'class="grid"/><text x="{LEFT - 6}" y="{y_of(tick) + 4:.1f}" text-anchor="end" '
                     f'class="tick" data-value="{tick:g}">{_num(tick)} ms</text>')
    x = float(LEFT)
    for i, step, dms in groups:
        start = x
        for dm in dms:
            name, stats = names.get(dm, dm), step.models[dm]
            w = slot * 0.3
            for j, (metric, value) in enumerate((("p50", stats.p50_ms or 0.0), ("p95", stats.p95_ms or 0.0))):
                bx = x + slot * 0.18 + j * w
                parts.append(f'<rect x="{bx:.1f}" y="{y_of(value):.1f}" width="{w - 2:.1f}" '
                             f'height="{base - y_of(value):.1f}" class="bar {role_class(name)}'
                             f'{" light" if metric == "p50" else ""}" data-model="{esc(dm)}" data-metric="{metric}" '
                             f'data-value="{value:.1f}"><title>{esc(name)} (deployed model {esc(dm)}) at step {i}: '
                             f"{metric} {value:.0f} ms</title></rect>"
                             f'<text x="{bx + (w - 2) / 2:.1f}" y="{y_of(value) - 3:.1f}" text-anchor="middle" '
                             f'class="value">{_num(value)}</text>')
            parts.append(f'<text x="{x + slot / 2:.1f}" y="{base + 15:.1f}" text-anchor="middle" class="model-label" '
                         f'data-model="{esc(dm)}">{esc(label(name, step, dm))}</text>')
            x += slot
        if not dms:
            x += slot
        parts.append(f'<text x="{(start + x) / 2:.1f}" y="{base + 31:.1f}" text-anchor="middle" class="step">'
                     f"step {i} (candidate at {step.percent} %)</text>" if promotion else
                     f'<text x="{(start + x) / 2:.1f}" y="{base + 31:.1f}" text-anchor="middle" class="step">'
                     f"check {i}</text>")
        if limits[i] is not None:
            ly = y_of(limits[i])
            parts.append(f'<line x1="{start + 4:.1f}" y1="{ly:.1f}" x2="{x - 4:.1f}" y2="{ly:.1f}" class="limit" '
                         f'data-value="{limits[i]:.1f}"/><text x="{x - 6:.1f}" y="{ly - 4:.1f}" text-anchor="end" '
                         f'class="value">candidate p95 limit {limits[i]:.0f} ms</text>')
    more, y = legend(names, model, base + 58)
    ratio, slack = thresholds.get("max_latency_p95_ratio"), thresholds.get("latency_slack_ms")
    lines = ["light bar: p50, dark bar: p95 of the successful answers"]
    if ratio is not None and slack is not None:
        lines += [f"limit: the candidate's p95 at most {ratio:g} x the serving models' p95 + {slack:g} ms, checked "
                  f"with at least {thresholds.get('min_latency_samples', 0):g} successful answers on each side;",
                  f"the candidate's error rate at most the serving models' + "
                  f"{_points(thresholds.get('max_error_rate_increase', 0.0))}"]
    notes, y = _captions(lines, y + 4)
    return _svg("latency-chart", "latency per step and model", y + 4, parts + more + notes)


def bake_timeline(step: StepResult, names: Mapping[str, str]) -> dict[str, list[tuple[float, float | None,
                                                                                        float | None]]]:
    """Role → [(seconds into the bake, error rate, p95 ms)] per Cloud Monitoring sample
    (the serving models summed: the bake judges them together)."""
    bake: Any = step.bake
    start = bake.window[0]
    out: dict[str, dict[float, list[float]]] = {"candidate": {}, "serving": {}}
    for dm, series in bake.series.items():
        role = "candidate" if names.get(dm) == "candidate" or dm == step.new_deployed_id else "serving"
        for c in series["response_count"]:
            slot = out[role].setdefault(c["start"], [0.0, 0.0, 0.0])
            slot[0] += c["count"]
            slot[1] += 0 if str(c["response_code"]).startswith("2") else c["count"]
        for d in series["prediction_latencies"]:
            slot = out[role].setdefault(d["start"], [0.0, 0.0, 0.0])
            slot[2] = max(slot[2], d["p95_ms"] or 0.0)
    return {role: [(t - start, (v[1] / v[0]) if v[0] else None, v[2] or None) for t, v in sorted(points.items())]
            for role, points in out.items()}


def bake_svg(step: StepResult, index: int, names: Mapping[str, str], model: str | None,
             thresholds: Mapping[str, float]) -> Markup:
    """Two panels over the bake, one point per Cloud Monitoring sample: error rate (top,
    0-100 %) and p95 latency (bottom), candidate and serving models; the bake's limits
    stated under them."""
    lines = bake_timeline(step, names)
    bake: Any = step.bake
    span = max([t for pts in lines.values() for t, _, _ in pts] + [bake.window[1] - bake.window[0], 1.0])
    p95_ticks = nice_ticks(max([p for pts in lines.values() for _, _, p in pts if p] + [1.0]), 4)
    panel_h, plot_w = 110.0, WIDTH - LEFT - RIGHT
    parts: list[str] = []
    for k, (metric, y0, ticks, unit) in enumerate((("error rate", 40.0, [0.0, 0.5, 1.0], "%"),
                                                   ("p95 latency", 40.0 + panel_h + 40, p95_ticks, "ms"))):
        top = ticks[-1]
        base = y0 + panel_h
        parts.append(f'<text x="{LEFT}" y="{y0 - 6:.1f}" class="axis-title">{metric}</text>'
                     f'<line x1="{LEFT}" y1="{y0:.1f}" x2="{LEFT}" y2="{base:.1f}" class="axis"/>'
                     f'<line x1="{LEFT}" y1="{base:.1f}" x2="{WIDTH - RIGHT}" y2="{base:.1f}" class="axis"/>')
        for tick in ticks:
            ty = base - panel_h * tick / top
            text = f"{tick * 100:.0f} %" if unit == "%" else f"{_num(tick)} ms"
            parts.append(f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{WIDTH - RIGHT}" y2="{ty:.1f}" class="grid"/>'
                         f'<text x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end" class="tick">{text}</text>')
        for role in ("serving", "candidate"):
            pts = []
            for t, err, p95 in lines[role]:
                value = err if k == 0 else p95
                if value is None:
                    continue
                x, y = LEFT + plot_w * t / span, base - panel_h * value / top
                pts.append(f"{x:.1f},{y:.1f}")
                shown = f"{value * 100:.0f} %" if k == 0 else f"{value:.0f} ms"
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" class="{role}"><title>{role} at '
                             f"{t:.0f} s: {metric} {shown}</title></circle>")
            if len(pts) > 1:
                parts.append(f'<polyline points="{" ".join(pts)}" class="{role}"/>')
    axis_y = 40.0 + 2 * panel_h + 40
    for tick in nice_ticks(span, 4):
        if tick <= span + 1e-9:
            x = LEFT + plot_w * tick / span
            parts.append(f'<text x="{x:.1f}" y="{axis_y + 16:.1f}" text-anchor="middle" class="tick">{tick:g} s</text>')
    parts.append(f'<text x="{LEFT}" y="{axis_y + 32:.1f}" class="axis-title">seconds into the bake</text>')
    more, y = legend(names, model, axis_y + 54)
    if "bake_max_error_rate_delta" in thresholds:
        limits = [f"bake limits: the candidate's error rate at most the serving models' + "
                  f"{_points(thresholds['bake_max_error_rate_delta'])},",
                  f"its p95 at most {thresholds['bake_max_latency_ratio']:g} x theirs, and at least "
                  f"{thresholds['bake_min_requests']:g} candidate requests to judge at all"]
    else:
        limits = ["bake limits: not recorded"]
    notes, y = _captions(limits, y + 4)
    return _svg(f"bake-chart-{index}", "error rate and p95 latency over the bake", y + 4, parts + more + notes)


__all__ = ["bake_svg", "latency_svg", "model_names", "nice_ticks", "share_svg"]
