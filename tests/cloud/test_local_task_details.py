"""Local pipeline jobs carry ``jobDetail.taskDetails`` shaped like Vertex's
PipelineTaskDetail (the UI's graph and task states; what `submit --wait` can follow):
a root task and one task per step, with states, times, output parameters and, for a
failed step, its error — read back through the SDK's own PipelineJob type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tune2serve.localstack import task_details
from tune2serve.localstack.pipeline_jobs import PipelineJobsService

PARENT = "/v1/projects/p/locations/us-central1"


@pytest.fixture
def service(tmp_path: Path):
    svc = PipelineJobsService(tmp_path / "state", {})
    yield svc
    svc.close()


def _run(service: PipelineJobsService, template: Path, job_id: str, source: str) -> dict:
    body = {"displayName": "echo", "pipelineSpec": yaml.safe_load(template.read_text()),
            "runtimeConfig": {"gcsOutputDirectory": "gs://b/root", "parameterValues": {"source": source}}}
    code, created = service.handle("POST", PARENT + "/pipelineJobs", {"pipelineJobId": job_id},
                                   json.dumps(body).encode())
    assert code == 200, created
    service.wait(created["name"], timeout_s=180)
    code, job = service.handle("GET", PARENT + f"/pipelineJobs/{job_id}", {}, b"")
    assert code == 200
    return job


def _as_sdk_type(job: dict) -> object:
    from google.cloud.aiplatform_v1 import PipelineJob

    return PipelineJob.from_json(json.dumps(job), ignore_unknown_fields=False)


def test_a_succeeded_run_has_its_tasks_states_and_outputs(service, tiny_template: Path) -> None:
    job = _run(service, tiny_template, "ok-run", "x")
    root, echo = job["jobDetail"]["taskDetails"]
    assert (root["taskName"], root["state"], root["taskId"]) == ("echo-pipeline", "SUCCEEDED", "1")
    assert (echo["taskName"], echo["state"], echo["parentTaskId"]) == ("echo", "SUCCEEDED", "1")
    assert echo["execution"]["state"] == "COMPLETE"
    assert echo["execution"]["metadata"] == {"output:Output": "x:3"}
    assert echo["startTime"] <= echo["endTime"]
    parsed = _as_sdk_type(job)
    assert [t.state.name for t in parsed.job_detail.task_details] == ["SUCCEEDED", "SUCCEEDED"]


def test_a_failed_step_carries_its_error(service, tiny_template: Path) -> None:
    job = _run(service, tiny_template, "failed-run", "fail")
    assert job["state"] == "PIPELINE_STATE_FAILED"
    root, echo = job["jobDetail"]["taskDetails"]
    assert (root["state"], echo["state"], echo["execution"]["state"]) == ("FAILED", "FAILED", "FAILED")
    assert "asked to fail" in echo["error"]["message"]
    assert "metadata" not in echo["execution"]  # no outputs: proto3 JSON leaves the empty map out
    assert _as_sdk_type(job).job_detail.task_details[1].error.message == echo["error"]["message"]


def test_while_a_run_goes_on_the_task_folders_say_which_steps_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "outputs" / "echo-pipeline-2025" / "export").mkdir(parents=True)
    done = run_dir / "outputs" / "echo-pipeline-2025" / "validate"
    done.mkdir()
    (done / task_details.EXECUTOR_OUTPUT).write_text(json.dumps({"parameterValues": {"ok": True}}))
    spec = {"pipelineInfo": {"name": "p"}, "components": {"comp-validate": {"outputDefinitions": {"artifacts": {
        "report": {"artifactType": {"schemaTitle": "system.Markdown", "schemaVersion": "0.0.1"}}}}}}}
    (done / "report").write_text("# ok")
    job = {"name": "projects/p/locations/l/pipelineJobs/j", "state": "PIPELINE_STATE_RUNNING", "pipelineSpec": spec}
    details = {d["taskName"]: d for d in task_details.task_details(job, run_dir)}
    assert {name: d["state"] for name, d in details.items()} == {"p": "RUNNING", "export": "RUNNING",
                                                               "validate": "SUCCEEDED"}
    assert details["validate"]["outputs"] == {"report": {"artifacts": [{
        "displayName": "report", "uri": str(done / "report"), "schemaTitle": "system.Markdown",
        "schemaVersion": "0.0.1", "metadata": {}}]}}
    assert "endTime" not in details["export"]
    queued = {**job, "state": "PIPELINE_STATE_QUEUED"}
    assert task_details.task_details(queued, tmp_path / "no-run-yet") == []
