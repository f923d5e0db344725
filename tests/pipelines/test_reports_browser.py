"""The HTML reports a person reads instead of logs, rendered in headless Chromium: the
page is not blank, the key figures are in the rendered DOM, the three reports (validate,
smoke-test, verify-traffic) wear the one stylesheet (equal computed styles of banner,
cards, headings and tables), the verify-traffic charts say what they show as laid out
(role and share labels, axis ticks, bar heights against the axis, limits, full ids inside
the chart), and generated hostile values render as text with no element injected.

The reports come from the real report code of the steps: validate runs on a real tiny
checkpoint; the verify-traffic result is built from the step's own statistics functions;
the smoke-test result from the step's own result types (the end-to-end tests render
reports of real runs too).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from tests.pipelines import browser
from tests.test_markdown import HOSTILE
from tests.test_report_html import shown  # what a reader sees of a value: redacted, CR/CRLF as LF

pytestmark = pytest.mark.browser


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    if browser.chromium() is None:
        pytest.skip("chromium is not installed (`make browser` or apt-get install chromium)")
    return tmp_path / "chromium-profile"


def render(page: Path, profile: Path) -> tuple[browser.Image, str]:
    png = browser.screenshot(page, page.with_suffix(".png"), profile)
    return browser.decode_png(png.read_bytes()), browser.dump_dom(page, profile)


def element_text(dom: str, element_id: str) -> str:
    """Text of the element with ``element_id`` (nested elements included), from the DOM."""
    from html.parser import HTMLParser

    class Finder(HTMLParser):
        depth, found, parts = 0, False, []  # noqa: RUF012 (one instance per call)
        VOID = {"br", "img", "meta", "link", "input", "hr", "col", "source", "wbr"}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in self.VOID:
                return
            if self.depth:
                self.depth += 1
            elif dict(attrs).get("id") == element_id:
                self.depth, self.found = 1, True

        def handle_endtag(self, tag: str) -> None:
            if self.depth and tag not in self.VOID:
                self.depth -= 1

        def handle_data(self, data: str) -> None:
            if self.depth:
                self.parts.append(data)

    finder = Finder()
    finder.parts = []
    finder.feed(dom)
    assert finder.found, f'no element with id="{element_id}" in the rendered page'
    return re.sub(r"\s+", " ", " ".join(finder.parts)).strip()


def assert_not_blank(image: browser.Image) -> None:
    assert (image.width, image.height) == (1200, 900)
    assert image.non_white_fraction() > 0.01, "the screenshot is (almost) blank"
    assert image.distinct_colours() > 16, "the screenshot has no text or colour to speak of"


def validate_report(folder: Path, out: Path) -> object:
    from tune2serve.components.validate import artifacts

    options = artifacts.options_from_parameters(False, "g2-standard-12", "NVIDIA_L4", 1, False, "")
    report = artifacts.validate_for_pipeline(str(folder), options)
    artifacts.write_report_files(report, str(out / "validate.md"), str(out / "validate.html"))
    return report


def test_validate_report_of_a_deployable_checkpoint(tiny_llama: Path, tmp_path: Path, profile: Path) -> None:
    report = validate_report(tiny_llama, tmp_path)
    image, dom = render(tmp_path / "validate.html", profile)
    assert_not_blank(image)
    assert report.ok  # type: ignore[attr-defined]
    assert element_text(dom, "verdict").startswith("DEPLOYABLE")
    params = report.summary["parameters"]  # type: ignore[attr-defined]
    assert f"{params:,}" in element_text(dom, "summary")
    assert "NVIDIA_L4" in element_text(dom, "summary")


def test_validate_report_of_a_broken_checkpoint(tiny_llama: Path, tmp_path: Path, profile: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama, broken)
    (broken / "tokenizer.json").unlink()
    report = validate_report(broken, tmp_path)
    image, dom = render(tmp_path / "validate.html", profile)
    assert_not_blank(image)
    assert not report.ok  # type: ignore[attr-defined]
    errors = report.count("error")  # type: ignore[attr-defined]
    assert element_text(dom, "verdict").startswith(f"NOT DEPLOYABLE: {errors} error{'s' * (errors != 1)}")
    findings = element_text(dom, "findings")
    assert "tokenizer" in findings


NEW_ID, OLD_ID = "6327416911112470528", "1001"  # a deployed-model id as Vertex makes them: 19 digits
MODEL = "projects/local-project/locations/us-central1/models/7"


def verify_result(outcome: str, *, new: str = NEW_ID, old: str = OLD_ID,
                  endpoint: str = "projects/local-project/locations/us-central1/endpoints/1001", model: str = MODEL,
                  reason: str = "", notes: tuple[str, ...] = ()) -> Any:
    """A promotion through 10 % and (when promoted) 100 %, judged by the step's own
    statistics, with the thresholds it applied recorded as ``verify_traffic`` records them."""
    from tune2serve.components.verify_traffic import stats
    from tune2serve.components.verify_traffic.bake import BakePolicy
    from tune2serve.components.verify_traffic.checks import ModelStats, Policy, StepResult
    from tune2serve.components.verify_traffic.verify import VerifyResult, applied_thresholds

    plan = stats.plan_requests(0.1)
    k = round(plan.requests * 0.11)
    canary, serving = ModelStats(k, 0, 41.0, 70.0), ModelStats(plan.requests - k, 0, 38.0, 66.0)
    steps = [StepResult(
        percent=10, new_deployed_id=new, configured_split={new: 10, old: 90}, endpoint_split={new: 10, old: 90},
        plan=plan, test=stats.share_test(k, plan.requests, 0.1), models={new: canary, old: serving},
        canary=canary, baseline=serving,
        failures=() if outcome == "promoted" else ("p95 latency 900 ms > 3x serving + 250 ms",))]
    if outcome == "promoted":
        full = stats.plan_requests(1.0)
        alone = ModelStats(full.requests, 0, 44.0, 81.0)
        steps.append(StepResult(percent=100, new_deployed_id=new, configured_split={new: 100},
                                endpoint_split={new: 100}, plan=full, test=stats.share_test(full.requests,
                                                                                              full.requests, 1.0),
                                models={new: alone}, canary=alone, baseline=None))
    split = {new: 100} if outcome == "promoted" else {old: 100}
    return VerifyResult(outcome=outcome, endpoint=endpoint, model=model, traffic_split=split, steps=steps,
                        previous_split={old: 100}, new_deployed_id=new, mode="promotion",
                        reason=reason or ("" if outcome == "promoted" else "canary step 10% failed"),
                        notes=list(notes), thresholds=applied_thresholds(Policy(), BakePolicy(bake_s=0)))


@pytest.mark.parametrize("outcome", ["promoted", "rolled_back"])
def test_verify_traffic_report(outcome: str, tmp_path: Path, profile: Path) -> None:
    from tune2serve.components.verify_traffic.report import HEADLINES, write_reports

    result = verify_result(outcome)
    write_reports(result, tmp_path / "verify.md", tmp_path / "verify.html")  # type: ignore[arg-type]
    image, dom = render(tmp_path / "verify.html", profile)
    assert_not_blank(image)
    assert element_text(dom, "outcome") == f"{HEADLINES[outcome]} {result.endpoint}"
    step = result.steps[0]  # type: ignore[attr-defined]
    evidence = element_text(dom, "evidence")
    assert f"({step.test.observed_share:.1%})" in evidence  # the observed share, as tested
    assert f"n = {step.test.n}" in evidence
    split = element_text(dom, "traffic-split")
    ((served, share),) = result.traffic_split.items()  # type: ignore[attr-defined]
    assert f"{served} {share}%" in split


# ---- one look, charts, hostile values: JavaScript in the rendered page (browser.Session) ----

@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[browser.Session]:
    if browser.chromium() is None:
        pytest.skip("chromium is not installed (`make browser` or apt-get install chromium)")
    with browser.Session(tmp_path_factory.mktemp("chromium-session")) as s:
        yield s


def smoke_result(value: str = "capital-of-france", *, passed: bool = True) -> Any:
    """A smoke-test result as the step makes it: checks of each request kind with their
    exchanges and figures (``stats.summarize``), ``value`` as name, prompt, answer and id."""
    from tune2serve.components.smoke_test.dataplane import Exchange
    from tune2serve.components.smoke_test.smoke import Check, SmokeResult
    from tune2serve.components.smoke_test.stats import summarize

    kinds = ("chat", "chat_stream", "predict", "stream_raw_predict")
    checks = [Check(f"{value} ({kind})", kind, passed or kind != "predict",
                    "" if passed or kind != "predict" else f"expected {value}",
                    {"messages": [{"role": "user", "content": value}]}, f"https://dns.example/{kind}", answer=value,
                    exchange=Exchange(kind, f"https://dns.example/{kind}", {}, 200, answer=value,
                                      latency_s=0.05 * (i + 1), ttft_s=0.01, deployed_model_id=value))
              for i, kind in enumerate(kinds)]
    metrics = summarize([0.05, 0.1, 0.15, 0.2], [0.01] * 4, 40, 0.5, 0, sum(c.passed for c in checks),
                        sum(not c.passed for c in checks))
    return SmokeResult(f"projects/local-project/locations/us-central1/endpoints/{value}", [value], checks, metrics)


def three_pages(tiny_llama: Path, out: Path) -> dict[str, Path]:
    """The three steps' HTML reports of a run that went well, written by their own code."""
    from tune2serve.components.smoke_test.report import write_reports as smoke_reports
    from tune2serve.components.verify_traffic.report import write_reports as verify_reports

    validate_report(tiny_llama, out)
    smoke_reports(smoke_result(), out / "smoke.md", out / "smoke.html")
    verify_reports(verify_result("promoted"), out / "verify.md", out / "verify.html")
    return {"validate": out / "validate.html", "smoke-test": out / "smoke.html", "verify-traffic": out / "verify.html"}


STYLE_PROPERTIES = ["font-family", "font-size", "font-weight", "line-height", "color", "background-color",
                    "border-top-left-radius", "padding-top", "padding-left", "margin-top", "border-left-width",
                    "border-left-color", "border-top-color", "text-transform", "letter-spacing", "text-align"]
# a tone-less card (a pass/fail card has a coloured edge), its label, a table's head cell, a section title
STYLED = {"banner": "header.banner", "card": "#summary .card:not(.pass):not(.fail):not(.warn):not(.info)",
          "card label": "#summary .card .label", "table head": "table th", "section title": "h2", "page": "body"}


def computed_styles(session: browser.Session) -> dict[str, dict[str, str]]:
    props, styled = json.dumps(STYLE_PROPERTIES), json.dumps(STYLED)
    return session.evaluate(f"""(() => {{
        const out = {{}};
        for (const [name, selector] of Object.entries({styled})) {{
            const el = document.querySelector(selector);
            if (!el) {{ out[name] = null; continue; }}
            const cs = getComputedStyle(el);
            out[name] = Object.fromEntries({props}.map(p => [p, cs.getPropertyValue(p)]));
        }}
        return out;
    }})()""")


def test_the_three_reports_wear_one_stylesheet(tiny_llama: Path, tmp_path: Path, session: browser.Session) -> None:
    styles, sheets, structure = {}, {}, {}
    for kind, page in three_pages(tiny_llama, tmp_path).items():
        session.open(page)
        styles[kind] = computed_styles(session)
        sheets[kind] = session.evaluate("[...document.styleSheets].map(s => [...s.cssRules].map(r => r.cssText))")
        structure[kind] = session.evaluate(
            "[document.querySelector('main.report').dataset.report, "
            "[...document.querySelector('main.report').children].map(e => e.tagName + (e.id ? '#' + e.id : ''))"
            ".slice(0, 2), document.querySelectorAll('#summary .card').length]")
    assert structure["validate"][0] == "validate" and structure["smoke-test"][0] == "smoke-test"
    for kind, (_, top, card_count) in structure.items():
        assert top[0] in ("HEADER#verdict", "HEADER#outcome") and top[1] == "SECTION#summary", (kind, top)
        assert card_count >= 4, kind
    assert sheets["validate"] == sheets["smoke-test"] == sheets["verify-traffic"] and len(sheets["validate"]) == 1
    for name in STYLED:
        assert styles["validate"][name] is not None, name
        assert styles["validate"][name] == styles["smoke-test"][name] == styles["verify-traffic"][name], name
    # and it is the stylesheet that styles them, not the browser's defaults
    banner, card = styles["validate"]["banner"], styles["validate"]["card"]
    assert (banner["background-color"], banner["color"], banner["border-top-left-radius"]) == (
        "rgb(26, 127, 55)", "rgb(255, 255, 255)", "10px")
    assert (card["border-left-width"], card["background-color"], styles["validate"]["page"]["background-color"]) == (
        "4px", "rgb(255, 255, 255)", "rgb(246, 247, 249)")


def chart_layout(session: browser.Session, chart_id: str) -> dict[str, Any]:
    """The chart as laid out: its texts (class, text, box), bars and limit lines (data and box)."""
    return session.evaluate(f"""(() => {{
        const svg = document.getElementById({chart_id!r});
        const box = e => {{ const b = e.getBBox(); return [b.x, b.y, b.width, b.height]; }};
        const frame = svg.getBoundingClientRect();
        // where a text lands on the page (transforms applied), relative to the chart's frame
        const placed = e => {{ const r = e.getBoundingClientRect();
                               return [r.left - frame.left, r.right - frame.left, r.top - frame.top,
                                       r.bottom - frame.top]; }};
        return {{
            frame: [frame.width, frame.height],
            texts: [...svg.querySelectorAll('text')].map(t => [t.getAttribute('class'), t.textContent, box(t),
                                                                t.dataset.model || null, placed(t)]),
            bars: [...svg.querySelectorAll('rect.bar')].map(r => [r.dataset.model, r.dataset.metric || null,
                                                                  Number(r.dataset.value), box(r)]),
            limits: [...svg.querySelectorAll('line.limit')].map(l => [Number(l.dataset.value), box(l)]),
            ticks: [...svg.querySelectorAll('text.tick')].map(t => [t.textContent, box(t)]),
        }};
    }})()""")


def texts_of(layout: dict[str, Any], cls: str) -> list[str]:
    return [text for c, text, _, _, _ in layout["texts"] if c == cls]


def test_the_verify_traffic_charts_say_what_they_show(tmp_path: Path, session: browser.Session) -> None:
    from tune2serve.components.verify_traffic.report import write_reports

    result = verify_result("promoted")
    write_reports(result, tmp_path / "v.md", tmp_path / "v.html")
    session.open(tmp_path / "v.html")
    first = result.steps[0]

    traffic = chart_layout(session, "traffic-chart")
    # each model named by its role and the share the step gave it: the serving model at 90 % is "serving 90 %"
    assert texts_of(traffic, "model-label") == ["serving 90 %", "candidate 10 %", "candidate 100 %"]
    shares = {(m, round(v, 4)) for m, _, v, _ in traffic["bars"]}
    total = sum(m.requests for m in first.models.values())
    assert shares == {(OLD_ID, round(first.models[OLD_ID].requests / total, 4)),
                      (NEW_ID, round(first.models[NEW_ID].requests / total, 4)), (NEW_ID, 1.0)}
    assert f"answered {first.models[NEW_ID].requests / total:.1%} ({first.models[NEW_ID].requests})" in texts_of(
        traffic, "value")
    assert [t for t, _ in traffic["ticks"]] == ["0 %", "25 %", "50 %", "75 %", "100 %"]
    # bar lengths drawn to the axis: 100 % spans from the 0 % tick's centre to the 100 % tick's
    zero, hundred = (x + w / 2 for _, (x, _, w, _) in (traffic["ticks"][0], traffic["ticks"][-1]))
    for _, _, value, (x, _, w, _) in traffic["bars"]:
        assert x == pytest.approx(zero, abs=1) and w == pytest.approx(value * (hundred - zero), abs=1)
    assert any("significance 0.01" in t for t in texts_of(traffic, "thresholds"))

    latency = chart_layout(session, "latency-chart")
    assert texts_of(latency, "model-label") == ["serving 90 %", "candidate 10 %", "candidate 100 %"]
    ticks = [(t, y + h / 2) for t, (_, y, _, h) in latency["ticks"]]
    assert ticks[0][0] == "0 ms" and all(t.endswith(" ms") for t, _ in ticks) and len(ticks) >= 3
    (top_label, top_y), zero_y = ticks[-1], ticks[0][1]
    per_ms = (zero_y - top_y) / float(top_label.removesuffix(" ms"))
    bars = {(m, metric, round(v)): box for m, metric, v, box in latency["bars"]}
    assert set(bars) == {(OLD_ID, "p50", 38), (OLD_ID, "p95", 66), (NEW_ID, "p50", 41), (NEW_ID, "p95", 70),
                         (NEW_ID, "p50", 44), (NEW_ID, "p95", 81)}
    for (_, _, value), (_, y, _, h) in bars.items():  # drawn to the axis's scale, standing on 0 ms
        assert h == pytest.approx(value * per_ms, abs=1) and y + h == pytest.approx(zero_y, abs=1)
    assert {"38", "66", "41", "70", "44", "81"} <= set(texts_of(latency, "value"))
    # the candidate's p95 limit at the canary step: 3 x the serving p95 + 250 ms, drawn where the axis says
    ((limit, (_, limit_y, _, _)),) = latency["limits"]
    assert limit == 3 * 66 + 250 and limit_y == pytest.approx(zero_y - limit * per_ms, abs=1)
    assert f"candidate p95 limit {limit:.0f} ms" in texts_of(latency, "value")
    stated = " ".join(texts_of(latency, "thresholds"))
    assert "at most 3 x the serving models' p95 + 250 ms" in stated and "models' + 2 points" in stated

    for layout in (traffic, latency):
        legend = {model: text for c, text, _, model, _ in layout["texts"] if c == "legend"}
        assert legend == {NEW_ID: f"candidate: deployed model {NEW_ID} (Model {MODEL})",
                          OLD_ID: f"serving: deployed model {OLD_ID}"}
        width, height = layout["frame"]
        for _, text, _, _, (left, right, top, bottom) in layout["texts"]:  # every text inside: nothing cut off
            assert left >= 0 and right <= width + 0.5 and top >= 0 and bottom <= height + 0.5, text
    thresholds = element_text(session.evaluate("document.documentElement.outerHTML"), "thresholds")
    assert "split test significance" in thresholds and "0.01" in thresholds and "3 x serving p95 + 250 ms" in thresholds


def hostile_pages(value: str, out: Path) -> dict[str, Path]:
    """The three reports with ``value`` in every field that comes from a checkpoint, a golden
    file or an endpoint: source, file names, messages, prompts, answers, ids, resource
    names, reasons, notes (the verify-traffic charts' ids and legends included)."""
    from tune2serve.components.smoke_test.report import render_html as smoke_html
    from tune2serve.components.validate.findings import Report, error, info, warning
    from tune2serve.components.validate.report import render_html as validate_html
    from tune2serve.components.verify_traffic.report import html as verify_html

    report = Report(source=value, findings=[error("shape-mismatch", value, value), warning("python-files", value,
                                                                                           value), info("x", value)],
                    summary={"family": value, "model_type": value, "matched_model": value, "parameters": 12})
    pages = {"validate": validate_html(report), "smoke-test": smoke_html(smoke_result(value, passed=False)),
             "verify-traffic": verify_html(verify_result("promoted", new=value, endpoint=value, model=value,
                                                         reason=value, notes=(value,)))}
    paths = {}
    for kind, text in pages.items():
        paths[kind] = out / f"{kind}.html"
        paths[kind].write_text(text, encoding="utf-8")
    return paths


DOM_SHAPE = """(() => ({
    tags: [...document.querySelectorAll('*')].map(e => e.tagName + ':' + [...e.attributes].map(a => a.name).sort()),
    banner: document.querySelector('header.banner small').textContent,
    forbidden: document.querySelectorAll('script, img, iframe, object, embed, a, link, form, input, base, meta' +
                                         '[http-equiv], svg foreignObject, [onerror], [onload], [style]').length,
}))()"""


# no shrinking: each example loads six pages, and a failure's example is printed as found
@settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.lists(st.one_of(st.sampled_from(HOSTILE),
                                st.text(max_size=10)), min_size=1, max_size=3).map("".join).filter(bool))
def test_hostile_values_render_as_text(value: str, tmp_path_factory: pytest.TempPathFactory,
                                       session: browser.Session) -> None:
    assume(value not in (OLD_ID, "(none)") and shown(value).strip())
    out = tmp_path_factory.mktemp("hostile")
    (out / "benign").mkdir()
    benign = hostile_pages("harmless-0", out / "benign")
    hostile = hostile_pages(value, out)
    for kind in hostile:
        session.open(benign[kind])
        expected = session.evaluate(DOM_SHAPE)
        session.open(hostile[kind])
        got = session.evaluate(DOM_SHAPE)
        assert got["forbidden"] == expected["forbidden"] == 0, kind
        assert got["tags"] == expected["tags"], kind  # not one element or attribute more, or less
        assert got["banner"] == shown(value) or (kind == "smoke-test" and got["banner"].endswith(shown(value))), kind
    # the value is where it was put, as text: a finding's file, an answer, the candidate's id in the chart legend
    session.open(hostile["verify-traffic"])
    legend = session.evaluate("[...document.querySelectorAll('#traffic-chart text.legend')].map(t => "
                              "[t.dataset.model, t.textContent])")
    assert [shown(value), f"candidate: deployed model {shown(value)} (Model {shown(value)})"] in legend
    session.open(hostile["validate"])
    cells = session.evaluate("[...document.querySelectorAll('#findings-error td')].map(t => t.textContent)")
    assert cells[2:] == [shown(value), shown(value)]


def test_the_bake_chart_names_roles_on_its_axes(tmp_path: Path, session: browser.Session) -> None:
    """A 10 % step baked 3 s on real traffic (Cloud Monitoring series as the API answers
    them, judged by the step's own rule): the chart's panels, ticks, legend and limits."""
    from dataclasses import replace

    from tune2serve.components.verify_traffic.bake import BakePolicy, judge_bake
    from tune2serve.components.verify_traffic.checks import Policy
    from tune2serve.components.verify_traffic.report import write_reports
    from tune2serve.components.verify_traffic.verify import applied_thresholds
    from tune2serve.components.vertex.monitoring import CountPoint, LatencyPoint, ModelSeries

    bounds = (10.0, 20.0, 40.0, 80.0, float("inf"))
    series = {NEW_ID: ModelSeries([CountPoint(10 + t, 11 + t, "200", 10) for t in range(3)],
                                  [LatencyPoint(10 + t, 11 + t, 10, 30.0, bounds[:3], (0, 2, 8)) for t in range(3)]),
              OLD_ID: ModelSeries([CountPoint(10 + t, 11 + t, "200", 90) for t in range(3)],
                                  [LatencyPoint(10 + t, 11 + t, 90, 15.0, bounds[:2], (10, 80)) for t in range(3)])}
    policy = BakePolicy(bake_s=3, min_requests=20)
    result = verify_result("rolled_back")
    baked = judge_bake(series, NEW_ID, [OLD_ID], policy, (10.0, 13.0))
    result.steps[0] = replace(result.steps[0], bake=baked)
    result.thresholds = applied_thresholds(Policy(), policy)
    write_reports(result, tmp_path / "b.md", tmp_path / "b.html")
    session.open(tmp_path / "b.html")
    assert session.evaluate("document.getElementById('bake-1').dataset.verdict") == baked.verdict
    layout = chart_layout(session, "bake-chart-1")
    assert texts_of(layout, "axis-title")[:2] == ["error rate", "p95 latency"]
    ticks = [t for t, _ in layout["ticks"]]
    assert ticks[:3] == ["0 %", "50 %", "100 %"] and ticks[3] == "0 ms" and "3 s" in ticks
    legend = {model: text for c, text, _, model, _ in layout["texts"] if c == "legend"}
    assert legend == {NEW_ID: f"candidate: deployed model {NEW_ID} (Model {MODEL})",
                      OLD_ID: f"serving: deployed model {OLD_ID}"}
    stated = " ".join(texts_of(layout, "thresholds"))
    assert "serving models' + 1 point," in stated and "at most 1.5 x theirs" in stated and "at least 20" in stated
    points = session.evaluate("[...document.querySelectorAll('#bake-chart-1 circle')].map(c => "
                              "[c.getAttribute('class'), c.textContent])")
    assert sorted({role for role, _ in points}) == ["candidate", "serving"] and len(points) == 12
    assert ["candidate", "candidate at 0 s: error rate 0 %"] in points
    width, height = layout["frame"]
    for _, text, _, _, (left, right, top, bottom) in layout["texts"]:
        assert left >= 0 and right <= width + 0.5 and top >= 0 and bottom <= height + 0.5, text
    thresholds = element_text(session.evaluate("document.documentElement.outerHTML"), "thresholds")
    assert "bake: max p95 latency ratio 1.5 x serving" in thresholds and "bake: min candidate requests 20" in thresholds
