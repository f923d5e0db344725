"""The rollback record in labels, the reports (Markdown, HTML rendered by Chromium) and
the CLI's usage errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tune2serve.components.verify_traffic.checks import Policy, judge_step
from tune2serve.components.verify_traffic.record import (
    PromotionRecord,
    read_record,
    record_labels,
    with_record,
)
from tune2serve.components.verify_traffic.report import html, markdown
from tune2serve.components.verify_traffic.verify import VerifyResult
from tune2serve.components.vertex.resources import sanitize_label_value

from tests.verify_traffic.simulate import NEW, OLD, endpoint_state, routed


def test_record_round_trips_through_labels() -> None:
    record = PromotionRecord("canary", "Run 42/A", "123", "456", {"111": 70, "222": 30})
    labels = record_labels(record)
    assert labels == {"tune2serve-promo-state": "canary", "tune2serve-promo-run": "run-42-a",
                      "tune2serve-promo-model": "123", "tune2serve-promo-new": "456",
                      "tune2serve-prev-111": "70", "tune2serve-prev-222": "30"}
    assert read_record({**labels, "team": "x"}) == PromotionRecord("canary", "run-42-a", "123", "456",
                                                                   {"111": 70, "222": 30})
    assert with_record({**labels, "team": "x"}, None) == {"team": "x"}
    assert read_record({"team": "x"}) is None
    assert len(sanitize_label_value("X" * 100)) == 63


def test_copied_resources_keep_machine_spec_and_replicas() -> None:
    from google.cloud.aiplatform_v1.types import Endpoint

    from tune2serve.components.vertex.endpoints import endpoint_state_from_resource

    resource = Endpoint(name="projects/p/locations/l/endpoints/9", deployed_models=[
        {"id": "1", "model": "projects/p/locations/l/models/m@2", "dedicated_resources": {
            "machine_spec": {"machine_type": "g2-standard-12", "accelerator_type": "NVIDIA_L4", "accelerator_count": 1},
            "min_replica_count": 2, "max_replica_count": 0, "spot": False}},
        {"id": "2", "model": "projects/p/locations/l/models/n", "dedicated_resources": {
            "machine_spec": {"machine_type": "n1-standard-4"}}}])
    gpu, cpu = endpoint_state_from_resource(resource).deployed_models
    assert gpu.dedicated_resources() == {
        "machine_spec": {"machine_type": "g2-standard-12", "accelerator_type": "NVIDIA_L4", "accelerator_count": 1},
        "min_replica_count": 2, "max_replica_count": 2}
    assert cpu.dedicated_resources() == {"machine_spec": {"machine_type": "n1-standard-4"}, "min_replica_count": 1,
                                         "max_replica_count": 1}
    assert (gpu.model_id, cpu.healthy) == ("m", False)


def _result(outcome: str = "rolled_back") -> VerifyResult:
    split = {OLD: 90, NEW: 10}
    steps = [judge_step(10, NEW, split, endpoint_state(split), routed(606, 0.10, 1), Policy()),
             judge_step(10, NEW, split, endpoint_state(split), routed(606, 0.0, 1), Policy())]
    return VerifyResult(outcome, "projects/p/locations/l/endpoints/9", "projects/p/locations/l/models/m",
                        {OLD: 100}, steps, reason=steps[1].failures[0], mode="promotion",
                        rollback={"restored_split": {OLD: 100}, "undeployed": [NEW]}, notes=["<b>n</b>"])


def test_markdown_and_json_carry_the_evidence() -> None:
    result = _result()
    md = markdown(result)
    assert "# verify-traffic: rolled_back" in md and "### Step 10% — FAILED" in md and "p-value" in md
    assert result.as_json()["outcome"] == "rolled_back"
    assert result.as_json()["evidence"]["steps"][1]["test"]["rejected"] is True
    metrics = result.metrics()
    assert metrics["rolled_back"] == 1.0 and metrics["step2_observed_share"] == 0.0
    assert metrics[f"step1_dm_{NEW}_error_rate"] == 0.0


def test_html_is_self_contained_and_escaped() -> None:
    page = html(_result())
    for element_id in ('id="outcome"', 'id="evidence"', 'id="traffic-split"', 'id="latency-chart"'):
        assert element_id in page
    assert "<b>n</b>" not in page and "&lt;b&gt;n&lt;/b&gt;" in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.browser
def test_chromium_renders_the_banner_and_tables(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine")
    page = tmp_path / "report.html"
    page.write_text(html(_result("promoted")), encoding="utf-8")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=60).stdout
    assert '<header id="outcome" class="banner pass" data-outcome="promoted">' in dom
    assert "Promoted: the new model serves 100%" in dom
    # a section per step, the models, the final split; the traffic and latency charts
    for element_id in ("step-1", "step-2", "models", "traffic-split", "traffic-chart", "latency-chart"):
        assert f'id="{element_id}"' in dom, element_id


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from tune2serve.cli.main import main

    with pytest.raises(SystemExit) as exited:  # argparse: mutually exclusive flags
        main(["verify-traffic", "123", "--project", "p", "--region", "r", "--model", "m",
              "--canary-percent", "10", "--steps", "10,100"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["verify-traffic", "projects/p/locations/r/endpoints/1", "--project", "p", "--region", "r",
              "--model", "projects/p/locations/r/models/2", "--steps", "50,10"])
    assert exited.value.code == 2
    assert "argument --steps: '50,10': canary steps must increase" in capsys.readouterr().err


def test_the_exit_handler_reads_the_state_kfp_gives_it() -> None:
    from kfp import dsl

    from tune2serve.components.verify_traffic.finalize import pipeline_state_of

    status = dsl.PipelineTaskFinalStatus(state="FAILED", pipeline_job_resource_name="projects/p/pipelineJobs/r",
                                         pipeline_task_name="exit-handler-1", error_code=9, error_message="x")
    assert pipeline_state_of(status) == "FAILED"
    assert pipeline_state_of({"state": "SUCCEEDED", "pipelineJobResourceName": "projects/p/pipelineJobs/r",
                              "pipelineTaskName": "exit-handler-1", "error": {}}) == "SUCCEEDED"
    assert pipeline_state_of({"state": "cancelled"}) == "CANCELLED"
