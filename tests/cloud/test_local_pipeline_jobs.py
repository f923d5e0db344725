"""The local pipelineJobs/schedules service answers as Vertex does: strict request
parsing with the SDK's types, Vertex's checks, 404/409/400 bodies the SDK understands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tune2serve.localstack.pipeline_jobs import PipelineJobsService

PARENT = "/v1/projects/p/locations/us-central1"


@pytest.fixture
def service(tmp_path: Path):
    svc = PipelineJobsService(tmp_path / "state", {})
    yield svc
    svc.close()


@pytest.fixture
def job_body(tiny_template: Path) -> dict:
    return {"displayName": "echo", "pipelineSpec": yaml.safe_load(tiny_template.read_text()),
            "runtimeConfig": {"gcsOutputDirectory": "gs://b/root", "parameterValues": {"source": "x"}}}


def _post(service, path: str, body: dict, **query: str):
    return service.handle("POST", PARENT + path, query, json.dumps(body).encode())


def test_paths_that_are_not_pipelines_are_left_to_the_router(service) -> None:
    assert service.handle("GET", PARENT + "/endpoints/1", {}, b"") is None
    assert service.handle("POST", "/v1beta1/projects/p/locations/l:deploy", {}, b"{}") is None


@pytest.mark.parametrize(("change", "status", "message"), [
    (lambda b: b.update(displayNam="x"), 400, "Invalid JSON payload received"),
    (lambda b: b["runtimeConfig"].update(gcsOutputDirectory="/tmp/root"), 400, "must be a gs:// URI"),
    (lambda b: b["runtimeConfig"]["parameterValues"].update(colour="red"), 400, "['colour'] are not defined"),
    (lambda b: b["runtimeConfig"].update(parameterValues={}), 400, "['source'] are required"),
    (lambda b: b.pop("pipelineSpec"), 400, "pipeline_spec is required"),
])
def test_a_malformed_pipeline_job_is_refused(service, job_body, change, status, message) -> None:
    change(job_body)
    code, body = _post(service, "/pipelineJobs", job_body, pipelineJobId="j1")
    assert (code, body["error"]["status"]) == (status, "INVALID_ARGUMENT")
    assert message in body["error"]["message"]
    assert service.jobs == {}


def test_create_get_list_conflict_and_missing(service, job_body) -> None:
    code, created = _post(service, "/pipelineJobs", job_body, pipelineJobId="j1")
    assert (code, created["name"], created["state"]) == (200, "projects/p/locations/us-central1/pipelineJobs/j1",
                                                         "PIPELINE_STATE_QUEUED")
    code, again = _post(service, "/pipelineJobs", job_body, pipelineJobId="j1")
    assert (code, again["error"]["status"]) == (409, "ALREADY_EXISTS")
    code, listed = service.handle("GET", PARENT + "/pipelineJobs", {"filter": 'display_name="echo"'}, b"")
    assert [j["name"] for j in listed["pipelineJobs"]] == [created["name"]]
    assert service.handle("GET", PARENT + "/pipelineJobs", {"filter": 'display_name="other"'}, b"") == (200, {})
    code, missing = service.handle("GET", PARENT + "/pipelineJobs/nope", {}, b"")
    assert (code, missing["error"]["status"]) == (404, "NOT_FOUND")
    code, numeric = service.handle("GET", PARENT + "/pipelineJobs/j1", {"$alt": "json;enum-encoding=int"}, b"")
    assert numeric["state"] in (1, 3, 4)  # QUEUED, RUNNING or SUCCEEDED as numbers
    assert service.wait(created["name"], timeout_s=120)["state"] == "PIPELINE_STATE_SUCCEEDED"
    code, op = service.handle("DELETE", PARENT + "/pipelineJobs/j1", {}, b"")
    assert (code, op["done"]) == (200, True)
    assert service.jobs == {}


def test_schedules_validate_their_cron_and_pipeline(service, job_body) -> None:
    schedule = {"displayName": "nightly", "cron": "0 3 * * *", "maxConcurrentRunCount": "1",
                "createPipelineJobRequest": {"parent": "projects/p/locations/us-central1", "pipelineJob": job_body}}
    code, body = _post(service, "/schedules", {**schedule, "cron": "0 3 * *"})
    assert (code, body["error"]["status"]) == (400, "INVALID_ARGUMENT") and "Invalid cron" in body["error"]["message"]
    code, body = _post(service, "/schedules", {**schedule, "maxConcurrentRunCount": "0"})
    assert code == 400 and "max_concurrent_run_count" in body["error"]["message"]
    assert service.schedules == {}
    code, created = _post(service, "/schedules", schedule)
    assert (code, created["state"]) == (200, "ACTIVE")
    rid = created["name"].rsplit("/", 1)[-1]
    code, patched = service.handle("PATCH", f"{PARENT}/schedules/{rid}", {"updateMask": "cron"},
                                   json.dumps({"cron": "30 4 * * *"}).encode())
    assert (code, patched["cron"], patched["nextRunTime"][11:16]) == (200, "30 4 * * *", "04:30")
    assert _post(service, f"/schedules/{rid}:resume", {})[0] == 400  # only a paused schedule resumes
