"""The tuning-job trigger, through functions-framework's own app and Flask's test client,
with the sample events in docs/sample_events/, submitting to the local Pipelines API."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tune2serve.pipelines import trigger

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "docs" / "sample_events"
SUCCEEDED_JOB = "projects/my-project/locations/us-central1/tuningJobs/4242424242424242424"


def _event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def function(pipelines, gcs_bucket, tiny_template, monkeypatch):
    """The deployed function's app, configured as docs/OPERATIONS.md deploys it."""
    import functions_framework

    monkeypatch.setenv("TUNE2SERVE_PIPELINE_ROOT", f"gs://{gcs_bucket}/trigger-runs")
    monkeypatch.setenv("TUNE2SERVE_TEMPLATE", str(tiny_template))
    monkeypatch.setenv("TUNE2SERVE_PIPELINE_PARAMS", json.dumps({"n": 2}))
    app = functions_framework.create_app(target="on_tuning_job_event", source=str(REPO / "pipelines" / "trigger.py"),
                                         signature_type="cloudevent")
    return app.test_client()


def _deliver(client, event: dict) -> int:
    response = client.post("/", data=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"})
    return response.status_code


def test_a_succeeded_tuning_job_submits_one_run_with_its_output(function, pipelines) -> None:
    assert _deliver(function, _event("pubsub_tuning_succeeded.json")) == 200
    name = f"projects/my-project/locations/us-central1/pipelineJobs/{trigger.pipeline_job_id(SUCCEEDED_JOB)}"
    assert pipelines.job_names() == [name]
    job = pipelines.service.wait(name, timeout_s=120)
    assert job["state"] == "PIPELINE_STATE_SUCCEEDED"
    assert job["runtimeConfig"]["parameterValues"] == {"source": "gs://my-tuning-bucket/tuning/run-42", "n": 2.0}
    assert job["labels"] == {"tune2serve-trigger": "tuning-job", "managed-by": "tune2serve"}


def test_a_redelivered_event_submits_nothing_more(function, pipelines, capsys) -> None:
    event = _event("pubsub_tuning_succeeded.json")
    assert _deliver(function, event) == 200
    first = pipelines.job_names()
    assert _deliver(function, event) == 200  # acknowledged, so Pub/Sub stops redelivering
    assert pipelines.job_names() == first and len(first) == 1
    assert '"action":"already_submitted"' in capsys.readouterr().err


def test_a_failed_tuning_job_is_ignored(function, pipelines, capsys) -> None:
    assert _deliver(function, _event("pubsub_tuning_failed.json")) == 200
    assert pipelines.job_names() == []
    assert f"{SUCCEEDED_JOB} is JOB_STATE_FAILED, not JOB_STATE_SUCCEEDED" in capsys.readouterr().err


def test_state_and_output_missing_from_the_event_are_read_from_the_tuning_job(function, pipelines) -> None:
    name = "projects/my-project/locations/us-central1/tuningJobs/5353535353535353535"
    pipelines.tuning_jobs[name] = {"name": name, "state": "JOB_STATE_SUCCEEDED", "outputUri": "gs://my-tuning-bucket/run-53"}
    assert _deliver(function, _event("pubsub_tuning_no_state.json")) == 200
    [job_name] = pipelines.job_names()
    assert pipelines.service.get_job(job_name)["runtimeConfig"]["parameterValues"]["source"] == "gs://my-tuning-bucket/run-53"


def test_an_audit_log_event_for_a_running_job_is_ignored(function, pipelines, capsys) -> None:
    name = "projects/my-project/locations/us-central1/tuningJobs/6464646464646464646"
    pipelines.tuning_jobs[name] = {"name": name, "state": "JOB_STATE_RUNNING"}
    assert _deliver(function, _event("auditlog_tuning_job.json")) == 200
    assert pipelines.job_names() == []
    assert "is JOB_STATE_RUNNING, not JOB_STATE_SUCCEEDED" in capsys.readouterr().err


@pytest.mark.parametrize("message_data", [
    "not base64!",
    base64.b64encode(b"{not json").decode(),
    base64.b64encode(json.dumps({"jsonPayload": {"state": "JOB_STATE_SUCCEEDED"}}).encode()).decode(),
])
def test_a_malformed_event_is_acknowledged_with_a_clear_message(function, pipelines, capsys, message_data) -> None:
    event = _event("pubsub_tuning_succeeded.json")
    event["data"]["message"]["data"] = message_data
    assert _deliver(function, event) == 200
    assert pipelines.job_names() == []
    err = capsys.readouterr().err
    assert '"event":"trigger_error"' in err and "Traceback" not in err


def test_the_pipeline_job_id_is_stable_unique_and_valid() -> None:
    a = trigger.pipeline_job_id(SUCCEEDED_JOB)
    assert a == trigger.pipeline_job_id(SUCCEEDED_JOB)
    assert a != trigger.pipeline_job_id(SUCCEEDED_JOB.replace("us-central1", "europe-west4"))
    assert a.startswith("tune2serve-tuning-4242424242424242424-") and len(a) <= 128


def test_the_log_entry_parser_reads_each_shape() -> None:
    proto_shape = {"protoPayload": {"resourceName": SUCCEEDED_JOB, "response": {"state": "JOB_STATE_SUCCEEDED",
                                                                              "outputUri": "gs://b/o"}}}
    labels_shape = {"resource": {"labels": {"project_id": "my-project", "location": "us-central1",
                                            "tuning_job_id": "4242424242424242424"}},
                    "jsonPayload": {"state": "JOB_STATE_CANCELLED"}}
    assert trigger.parse_log_entry(proto_shape) == trigger.TuningJobEvent(SUCCEEDED_JOB, "JOB_STATE_SUCCEEDED", "gs://b/o")
    assert trigger.parse_log_entry(labels_shape) == trigger.TuningJobEvent(SUCCEEDED_JOB, "JOB_STATE_CANCELLED", None)


def test_the_compiled_promotion_pipeline_is_submitted_with_one_export_per_tuning_job(
        function, pipelines, gcs_bucket, monkeypatch) -> None:
    from google.cloud import aiplatform

    template = REPO / "compiled" / "promote_checkpoint.yaml"
    monkeypatch.setenv("TUNE2SERVE_TEMPLATE", str(template))
    monkeypatch.setenv("TUNE2SERVE_PIPELINE_PARAMS", "{}")
    monkeypatch.setenv("TUNE2SERVE_EXPORT_PREFIX", f"gs://{gcs_bucket}/exports/")
    assert _deliver(function, _event("pubsub_tuning_succeeded.json")) == 200
    [name] = pipelines.job_names()
    job = pipelines.service.get_job(name)
    assert job["runtimeConfig"]["parameterValues"] == {
        "source": "gs://my-tuning-bucket/tuning/run-42", "export_dest": f"gs://{gcs_bucket}/exports/4242424242424242424",
        "project": "my-project", "region": "us-central1",
    }
    aiplatform.PipelineJob.get(name).cancel()  # the SDK's cancel; the run never reaches a deploy
    assert pipelines.service.wait(name, timeout_s=60)["state"] == "PIPELINE_STATE_CANCELLED"


def test_the_template_can_live_in_gcs(function, pipelines, gcs_bucket, tiny_template, monkeypatch) -> None:
    from tune2serve.components.checkpoint.storage import storage_client

    storage_client().bucket(gcs_bucket).blob("templates/echo.yaml").upload_from_filename(str(tiny_template))
    monkeypatch.setenv("TUNE2SERVE_TEMPLATE", f"gs://{gcs_bucket}/templates/echo.yaml")
    assert _deliver(function, _event("pubsub_tuning_succeeded.json")) == 200
    [name] = pipelines.job_names()
    assert pipelines.service.wait(name, timeout_s=120)["state"] == "PIPELINE_STATE_SUCCEEDED"
