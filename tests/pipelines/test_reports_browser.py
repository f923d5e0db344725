"""The HTML reports a person reads instead of logs, rendered in headless Chromium: the
page is not blank and the key figures are in the rendered DOM.

The reports come from the real report code of the validate and verify-traffic steps:
validate runs on a real tiny checkpoint; the verify-traffic result is built from the
step's own statistics functions (the end-to-end tests render reports of real runs too).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.pipelines import browser

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


def verify_result(outcome: str) -> object:
    from tune2serve.components.verify_traffic import stats
    from tune2serve.components.verify_traffic.checks import ModelStats, StepResult
    from tune2serve.components.verify_traffic.verify import VerifyResult

    endpoint = "projects/local-project/locations/us-central1/endpoints/1001"
    new, old = "2002", "1001"
    plan = stats.plan_requests(0.1)
    k = round(plan.requests * 0.11)
    step = StepResult(
        percent=10, new_deployed_id=new, configured_split={new: 10, old: 90}, endpoint_split={new: 10, old: 90},
        plan=plan, test=stats.share_test(k, plan.requests, 0.1),
        models={new: ModelStats(k, 0, 41.0, 70.0), old: ModelStats(plan.requests - k, 0, 38.0, 66.0)},
        canary=ModelStats(k, 0, 41.0, 70.0), baseline=ModelStats(plan.requests - k, 0, 38.0, 66.0),
        failures=() if outcome == "promoted" else ("p95 latency 900 ms > 3x serving + 250 ms",),
    )
    split = {new: 100} if outcome == "promoted" else {old: 100}
    return VerifyResult(outcome=outcome, endpoint=endpoint, model="projects/local-project/locations/us-central1/models/7",
                        traffic_split=split, steps=[step], previous_split={old: 100}, new_deployed_id=new,
                        mode="promotion", reason="" if outcome == "promoted" else "canary step 10% failed")


@pytest.mark.parametrize("outcome", ["promoted", "rolled_back"])
def test_verify_traffic_report(outcome: str, tmp_path: Path, profile: Path) -> None:
    from tune2serve.components.verify_traffic.report import HEADLINES, write_reports

    result = verify_result(outcome)
    write_reports(result, tmp_path / "verify.md", tmp_path / "verify.html")  # type: ignore[arg-type]
    image, dom = render(tmp_path / "verify.html", profile)
    assert_not_blank(image)
    assert element_text(dom, "outcome") == HEADLINES[outcome]
    step = result.steps[0]  # type: ignore[attr-defined]
    evidence = element_text(dom, "evidence")
    assert f"({step.test.observed_share:.1%})" in evidence  # the observed share, as tested
    assert f"n = {step.test.n}" in evidence
    split = element_text(dom, "traffic-split")
    ((served, share),) = result.traffic_split.items()  # type: ignore[attr-defined]
    assert f"{served} {share}%" in split
