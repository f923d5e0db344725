"""The tuning-job trigger, through functions-framework's own app and Flask's test client,
with the sample events in docs/sample_events/, reading tuning jobs from and submitting to
the local Vertex API (the local stack's tuning-jobs store and pipelineJobs service).

The trust rule under test: the event says only *which* tuning job to look at; its state
and output come from Vertex AI; malformed or forged events are logged as one line and
acknowledged; only a transient Vertex error fails the delivery."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.pipelines import trigger

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "docs" / "sample_events"
PROJECT = "my-project"
SUCCEEDED_JOB = "projects/my-project/locations/us-central1/tuningJobs/4242424242424242424"
OUTPUT = "gs://my-tuning-bucket/tuning/run-42"
MARKER = "PAYLOAD-MARKER-7f3a"  # planted in events; a log line never carries the payload
FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def _pubsub(entry: Any) -> dict:
    """The sample Pub/Sub event carrying ``entry`` (any JSON value) as its LogEntry."""
    event = _event("pubsub_tuning_succeeded.json")
    event["data"]["message"]["data"] = base64.b64encode(json.dumps(entry).encode()).decode()
    return event


def _claiming_success(name: str, output: str = OUTPUT) -> dict:
    """A Pub/Sub event that names ``name`` and claims it succeeded with ``output``."""
    return _pubsub({"logName": f"projects/{PROJECT}/logs/x", "protoPayload": {"resourceName": name},
                    "jsonPayload": {"state": "JOB_STATE_SUCCEEDED", "outputUri": output, "message": MARKER}})


def _in_vertex(pipelines, name: str, state: str, output: str | None = None) -> None:
    """The tuning job as Vertex AI reports it (the local stack's tuning-jobs store)."""
    pipelines.tuning_jobs[name] = {"name": name, "state": state, **({"outputUri": output} if output else {})}


@pytest.fixture
def function(pipelines, gcs_bucket, tiny_template, monkeypatch):
    """The deployed function's app, configured as docs/OPERATIONS.md deploys it."""
    import functions_framework

    monkeypatch.setenv("TUNE2SERVE_PIPELINE_ROOT", f"gs://{gcs_bucket}/trigger-runs")
    monkeypatch.setenv("TUNE2SERVE_TEMPLATE", str(tiny_template))
    monkeypatch.setenv("TUNE2SERVE_PIPELINE_PARAMS", json.dumps({"n": 2}))
    monkeypatch.setenv("TUNE2SERVE_PROJECT", PROJECT)
    monkeypatch.delenv("TUNE2SERVE_TUNING_PROJECTS", raising=False)
    monkeypatch.delenv("TUNE2SERVE_EXPORT_PREFIX", raising=False)
    app = functions_framework.create_app(target="on_tuning_job_event", source=str(REPO / "pipelines" / "trigger.py"),
                                         signature_type="cloudevent")
    return app.test_client()


def _deliver(client, event: dict) -> int:
    response = client.post("/", data=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"})
    return response.status_code


def _one_line(capsys) -> dict:
    """The single structured line the event produced (anything more fails the test)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def _refused(client, pipelines, capsys, event: dict) -> dict:
    """Delivers ``event`` and checks what every refused event gets: acknowledged, nothing
    submitted, one trigger_error line without the payload; returns that line."""
    assert _deliver(client, event) == 200
    assert pipelines.job_names() == []
    line = _one_line(capsys)
    assert line["event"] == "trigger_error" and line["severity"] == "ERROR", line
    assert MARKER not in json.dumps(line) and "Traceback" not in line["message"]
    assert len(line["message"]) < 600, line  # a name of the problem, not a dump
    return line


# ------------------------------------------------------------------ what works
def test_a_succeeded_tuning_job_submits_one_run_with_its_output(function, pipelines) -> None:
    _in_vertex(pipelines, SUCCEEDED_JOB, "JOB_STATE_SUCCEEDED", OUTPUT)
    assert _deliver(function, _event("pubsub_tuning_succeeded.json")) == 200
    name = f"projects/my-project/locations/us-central1/pipelineJobs/{trigger.pipeline_job_id(SUCCEEDED_JOB)}"
    assert pipelines.job_names() == [name]
    job = pipelines.service.wait(name, timeout_s=120)
    assert job["state"] == "PIPELINE_STATE_SUCCEEDED"
    assert job["runtimeConfig"]["parameterValues"] == {"source": OUTPUT, "n": 2.0}
    assert job["labels"] == {"tune2serve-trigger": "tuning-job", "managed-by": "tune2serve"}


def test_the_output_is_read_from_vertex_not_from_the_event(function, pipelines) -> None:
    _in_vertex(pipelines, SUCCEEDED_JOB, "JOB_STATE_SUCCEEDED", "gs://my-tuning-bucket/the-real-output/")
    assert _deliver(function, _claiming_success(SUCCEEDED_JOB, "gs://attacker-bucket/poison")) == 200
    [name] = pipelines.job_names()
    assert pipelines.service.get_job(name)["runtimeConfig"]["parameterValues"]["source"] == \
        "gs://my-tuning-bucket/the-real-output"


def test_a_redelivered_event_submits_nothing_more(function, pipelines, capsys) -> None:
    _in_vertex(pipelines, SUCCEEDED_JOB, "JOB_STATE_SUCCEEDED", OUTPUT)
    event = _event("pubsub_tuning_succeeded.json")
    assert _deliver(function, event) == 200
    first = pipelines.job_names()
    capsys.readouterr()
    assert _deliver(function, event) == 200  # acknowledged, so Pub/Sub stops redelivering
    assert pipelines.job_names() == first and len(first) == 1
    assert _one_line(capsys)["action"] == "already_submitted"


def test_a_failed_tuning_job_is_ignored(function, pipelines, capsys) -> None:
    _in_vertex(pipelines, SUCCEEDED_JOB, "JOB_STATE_FAILED")
    assert _deliver(function, _event("pubsub_tuning_failed.json")) == 200
    assert pipelines.job_names() == []
    line = _one_line(capsys)
    assert line["event"] == "trigger_ignored"
    assert f"{SUCCEEDED_JOB} is JOB_STATE_FAILED, not JOB_STATE_SUCCEEDED" in line["message"]


def test_state_and_output_missing_from_the_event_are_read_from_the_tuning_job(function, pipelines) -> None:
    name = "projects/my-project/locations/us-central1/tuningJobs/5353535353535353535"
    _in_vertex(pipelines, name, "JOB_STATE_SUCCEEDED", "gs://my-tuning-bucket/run-53")
    assert _deliver(function, _event("pubsub_tuning_no_state.json")) == 200
    [job_name] = pipelines.job_names()
    assert pipelines.service.get_job(job_name)["runtimeConfig"]["parameterValues"]["source"] == "gs://my-tuning-bucket/run-53"


def test_an_audit_log_event_for_a_running_job_is_ignored(function, pipelines, capsys) -> None:
    _in_vertex(pipelines, "projects/my-project/locations/us-central1/tuningJobs/6464646464646464646", "JOB_STATE_RUNNING")
    assert _deliver(function, _event("auditlog_tuning_job.json")) == 200
    assert pipelines.job_names() == []
    assert "is JOB_STATE_RUNNING, not JOB_STATE_SUCCEEDED" in _one_line(capsys)["message"]


def test_a_job_of_another_configured_project_is_promoted(function, pipelines, monkeypatch) -> None:
    monkeypatch.setenv("TUNE2SERVE_TUNING_PROJECTS", "my-project,123456789012")
    name = "projects/123456789012/locations/europe-west4/tuningJobs/77"
    _in_vertex(pipelines, name, "JOB_STATE_SUCCEEDED", OUTPUT)
    assert _deliver(function, _claiming_success(name)) == 200
    [run] = pipelines.job_names()
    assert run.startswith("projects/my-project/locations/europe-west4/pipelineJobs/tune2serve-tuning-77-")


def test_the_compiled_promotion_pipeline_is_submitted_with_one_export_per_tuning_job(
        function, pipelines, gcs_bucket, monkeypatch) -> None:
    from google.cloud import aiplatform

    _in_vertex(pipelines, SUCCEEDED_JOB, "JOB_STATE_SUCCEEDED", OUTPUT)
    template = REPO / "compiled" / "promote_checkpoint.yaml"
    monkeypatch.setenv("TUNE2SERVE_TEMPLATE", str(template))
    monkeypatch.setenv("TUNE2SERVE_PIPELINE_PARAMS", "{}")
    monkeypatch.setenv("TUNE2SERVE_EXPORT_PREFIX", f"gs://{gcs_bucket}/exports/")
    assert _deliver(function, _event("pubsub_tuning_succeeded.json")) == 200
    [name] = pipelines.job_names()
    job = pipelines.service.get_job(name)
    assert job["runtimeConfig"]["parameterValues"] == {
        "source": OUTPUT, "export_dest": f"gs://{gcs_bucket}/exports/4242424242424242424",
        "project": "my-project", "region": "us-central1",
    }
    aiplatform.PipelineJob.get(name).cancel()  # the SDK's cancel; the run never reaches a deploy
    assert pipelines.service.wait(name, timeout_s=60)["state"] == "PIPELINE_STATE_CANCELLED"


def test_the_template_can_live_in_gcs(function, pipelines, gcs_bucket, tiny_template, monkeypatch) -> None:
    from tune2serve.components.checkpoint.storage import storage_client

    _in_vertex(pipelines, SUCCEEDED_JOB, "JOB_STATE_SUCCEEDED", OUTPUT)
    storage_client().bucket(gcs_bucket).blob("templates/echo.yaml").upload_from_filename(str(tiny_template))
    monkeypatch.setenv("TUNE2SERVE_TEMPLATE", f"gs://{gcs_bucket}/templates/echo.yaml")
    assert _deliver(function, _event("pubsub_tuning_succeeded.json")) == 200
    [name] = pipelines.job_names()
    assert pipelines.service.wait(name, timeout_s=120)["state"] == "PIPELINE_STATE_SUCCEEDED"


def test_the_pipeline_job_id_is_stable_unique_and_valid() -> None:
    a = trigger.pipeline_job_id(SUCCEEDED_JOB)
    assert a == trigger.pipeline_job_id(SUCCEEDED_JOB)
    assert a != trigger.pipeline_job_id(SUCCEEDED_JOB.replace("us-central1", "europe-west4"))
    assert a.startswith("tune2serve-tuning-4242424242424242424-") and len(a) <= 128


def test_the_log_entry_parser_reads_each_shape_for_the_job_name_only() -> None:
    proto_shape = {"protoPayload": {"resourceName": SUCCEEDED_JOB, "response": {"state": "JOB_STATE_SUCCEEDED",
                                                                              "outputUri": "gs://b/o"}}}
    labels_shape = {"resource": {"labels": {"project_id": "my-project", "location": "us-central1",
                                            "tuning_job_id": "4242424242424242424"}},
                    "jsonPayload": {"state": "JOB_STATE_CANCELLED"}}
    log_name_shape = {"logName": "projects/my-project/logs/x",
                      "resource": {"labels": {"location": "us-central1", "job_id": "4242424242424242424"}}}
    for entry in (proto_shape, labels_shape, log_name_shape):
        assert trigger.parse_log_entry(entry) == SUCCEEDED_JOB


# ------------------------------------------------------------- malformed events
_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)  # control, format and separator characters included
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=12)
_NAMEISH = st.builds(lambda p, l, i: f"projects/{p}/locations/{l}/tuningJobs/{i}",
                     st.sampled_from([PROJECT, "other-project", "", "..", MARKER]) | _TEXT,
                     st.sampled_from(["us-central1", "", "../x"]) | _TEXT,
                     st.sampled_from(["1", "..", "", "1/../2"]) | _TEXT)
_FIELD = _JSON | _NAMEISH  # every field the trigger reads: any JSON type, or a name of any shape
_LABELS = st.fixed_dictionaries({}, optional={k: _FIELD for k in (
    "tuning_job_id", "job_id", "project_id", "resource_container", "location", "region")})
_ENTRY = st.fixed_dictionaries({}, optional={
    "protoPayload": _JSON | st.fixed_dictionaries({}, optional={
        "resourceName": _FIELD, "response": _JSON | st.fixed_dictionaries({}, optional={"name": _FIELD})}),
    "jsonPayload": _JSON | st.fixed_dictionaries({}, optional={
        "tuningJob": _FIELD, "name": _FIELD, "resourceName": _FIELD, "state": _JSON, "outputUri": _JSON}),
    "resource": _JSON | st.fixed_dictionaries({}, optional={
        "labels": _JSON | _LABELS, "type": _JSON}),
    "logName": _FIELD,
})


def _marked(entry: dict) -> dict:
    """``entry`` with the marker in a field the trigger never reads."""
    return {**entry, "insertId": MARKER, "textPayload": MARKER * 3}


def _deep(depth: int) -> str:
    return '{"jsonPayload":' * depth + "1" + "}" * depth


_RAW_DATA = st.one_of(  # what message.data decodes to, when it is not a LogEntry object
    st.integers(65, 3000).map(lambda d: _deep(d).encode()),
    st.integers(65, 3000).map(lambda d: ("[" * d + "]" * d).encode()),
    st.binary(max_size=64),
    _JSON.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.just(b'{"jsonPayload": 1, "jsonPayload": 2}'),
    st.just(("1" * 5000).encode()),
)


@st.composite
def _malformed_events(draw) -> dict:
    event = _event("pubsub_tuning_succeeded.json")
    shape = draw(st.sampled_from(["pubsub-entry", "pubsub-raw", "pubsub-envelope", "audit", "type"]))
    if shape == "pubsub-entry":
        event["data"]["message"]["data"] = base64.b64encode(json.dumps(_marked(draw(_ENTRY))).encode()).decode()
    elif shape == "pubsub-raw":
        event["data"]["message"]["data"] = base64.b64encode(draw(_RAW_DATA)).decode()
    elif shape == "pubsub-envelope":  # message.data, message or data of the wrong type or not base64
        where = draw(st.sampled_from(["data", "message", "message.data"]))
        value = draw(_JSON | _TEXT.map(lambda t: t + "!"))
        if where == "data":
            event["data"] = value
        elif where == "message":
            event["data"]["message"] = value
        else:
            event["data"]["message"]["data"] = value
    elif shape == "audit":
        event = _event("auditlog_tuning_job.json")
        entry = draw(_ENTRY.map(_marked) | st.integers(65, 400).map(lambda d: json.loads(_deep(d))) | _JSON)
        event["data"] = entry
    else:
        event["type"] = draw(_TEXT | st.sampled_from(["google.cloud.storage.object.v1.finalized", ""]))
    return event


@FUZZ
@given(event=_malformed_events())
def test_a_malformed_event_is_logged_once_and_acknowledged(function, pipelines, capsys, event) -> None:
    _refused(function, pipelines, capsys, event)


@pytest.mark.parametrize("message_data", [
    "not base64!",
    base64.b64encode(b"{not json").decode(),
    base64.b64encode(json.dumps({"jsonPayload": {"state": "JOB_STATE_SUCCEEDED"}}).encode()).decode(),
])
def test_a_malformed_event_names_what_was_wrong(function, pipelines, capsys, message_data) -> None:
    event = _event("pubsub_tuning_succeeded.json")
    event["data"]["message"]["data"] = message_data
    line = _refused(function, pipelines, capsys, event)
    assert any(w in line["message"] for w in ("not base64", "not valid JSON", "names no tuning job")), line


@pytest.mark.parametrize(("entry", "problem"), [
    ({"protoPayload": []}, "LogEntry.protoPayload is an array, not an object"),
    ({"jsonPayload": "x"}, "LogEntry.jsonPayload is a string, not an object"),
    ({"resource": 3}, "LogEntry.resource is a number, not an object"),
    ({"protoPayload": {"response": [SUCCEEDED_JOB]}}, "LogEntry.protoPayload.response is an array"),
    ({"logName": {"a": 1}, "resource": {"labels": {"job_id": "1", "location": "us-central1"}}},
     "LogEntry.logName is an object, not a string"),
    ({"protoPayload": {"resourceName": SUCCEEDED_JOB}, "jsonPayload": {"name": SUCCEEDED_JOB[:-1] + "0"}},
     "names different tuning jobs"),
    ({"jsonPayload": json.loads(_deep(70))}, "nests deeper than"),
    ({"jsonPayload": {"message": "x" * (trigger.MAX_LOG_ENTRY_BYTES + 1)}}, "characters, above the"),
])
def test_each_malformed_field_is_named(function, pipelines, capsys, entry, problem) -> None:
    assert problem in _refused(function, pipelines, capsys, _pubsub(entry))["message"]


def test_an_audit_log_entry_too_large_or_deep_is_refused(function, pipelines, capsys) -> None:
    event = _event("auditlog_tuning_job.json")
    event["data"]["jsonPayload"] = {"message": "x" * trigger.MAX_LOG_ENTRY_BYTES}
    assert "bytes is above the" in _refused(function, pipelines, capsys, event)["message"]
    event["data"]["jsonPayload"] = json.loads(_deep(70))
    assert "nests deeper than" in _refused(function, pipelines, capsys, event)["message"]


def test_a_message_too_large_to_be_a_log_entry_is_refused_before_decoding(function, pipelines, capsys) -> None:
    event = _event("pubsub_tuning_succeeded.json")
    event["data"]["message"]["data"] = "A" * (2 * trigger.MAX_LOG_ENTRY_BYTES)
    assert "characters, above" in _refused(function, pipelines, capsys, event)["message"]


# ---------------------------------------------------------------- forged events
def test_a_job_of_another_project_is_not_submitted_in_ours(function, pipelines, capsys) -> None:
    name = "projects/other-project/locations/us-central1/tuningJobs/4242424242424242424"
    _in_vertex(pipelines, name, "JOB_STATE_SUCCEEDED", "gs://other-bucket/their-model")
    line = _refused(function, pipelines, capsys, _claiming_success(name, "gs://other-bucket/their-model"))
    assert "project 'other-project', not a configured project (my-project)" in line["message"]


@FUZZ
@given(job_id=st.sampled_from(["..", ".", "../../etc", "1/../2", "%2e%2e", "١٢٣", "123\n", " 123", "-1", "1e3",
                               "12345678901234567890", ""]) | _TEXT.filter(lambda t: not t.isascii() or not t.isdigit()),
       via=st.sampled_from(["resourceName", "labels"]))
def test_a_job_id_that_is_not_vertex_syntax_is_refused(function, pipelines, capsys, monkeypatch, gcs_bucket,
                                                       job_id, via) -> None:
    monkeypatch.setenv("TUNE2SERVE_EXPORT_PREFIX", f"gs://{gcs_bucket}/exports")
    name = f"projects/{PROJECT}/locations/us-central1/tuningJobs/{job_id}"
    _in_vertex(pipelines, name, "JOB_STATE_SUCCEEDED", OUTPUT)  # even a job Vertex would report
    if via == "resourceName":
        event = _claiming_success(name)
    else:
        event = _pubsub({"resource": {"labels": {"project_id": PROJECT, "location": "us-central1",
                                                 "tuning_job_id": job_id}}, "insertId": MARKER})
    line = _refused(function, pipelines, capsys, event)
    assert "Vertex AI answered" not in line["message"]  # refused before Vertex is asked


@FUZZ
@given(project=st.sampled_from(["My-Project", "my_project", "..", "my-project ", "my-project\n", "-my-project"]) | _TEXT,
       location=st.sampled_from(["us-central1", "US-CENTRAL1", "..", "us-central1/x", "global"]))
def test_a_project_or_location_outside_the_configuration_is_refused(function, pipelines, capsys, project,
                                                                   location) -> None:
    if project == PROJECT and location == "us-central1":
        project = "other-project"
    name = f"projects/{project}/locations/{location}/tuningJobs/42"
    _in_vertex(pipelines, name, "JOB_STATE_SUCCEEDED", OUTPUT)  # even a job Vertex would report
    line = _refused(function, pipelines, capsys, _claiming_success(name))
    assert "Vertex AI answered" not in line["message"]  # refused before Vertex is asked


@pytest.mark.parametrize("state", ["JOB_STATE_RUNNING", "JOB_STATE_FAILED", "JOB_STATE_PENDING",
                                   "JOB_STATE_CANCELLED", "JOB_STATE_QUEUED"])
def test_a_success_claimed_while_vertex_says_otherwise_submits_nothing(function, pipelines, capsys, state) -> None:
    _in_vertex(pipelines, SUCCEEDED_JOB, state, OUTPUT)
    assert _deliver(function, _claiming_success(SUCCEEDED_JOB)) == 200
    assert pipelines.job_names() == []
    line = _one_line(capsys)
    assert line["event"] == "trigger_ignored" and f"is {state}, not JOB_STATE_SUCCEEDED" in line["message"]


def test_a_job_vertex_does_not_know_submits_nothing(function, pipelines, capsys) -> None:
    assert "404" in _refused(function, pipelines, capsys, _claiming_success(SUCCEEDED_JOB))["message"]


_CONTROL = st.characters(categories=["Cc", "Cf", "Zl", "Zp"])
_BAD_OUTPUTS = st.one_of(
    st.builds(lambda scheme, rest: scheme + rest,
              st.sampled_from(["https://", "http://", "file://", "/", "", "gs:/", "GS://", "s3://", "gs:", "gcs://"]),
              st.sampled_from(["my-tuning-bucket/run", "etc/passwd", "x"])),
    st.builds(lambda bucket: f"gs://{bucket}/run", st.sampled_from(
        ["", "ab", "My-Bucket", "-bucket", "bucket-", "goog-bucket", "my-google-bucket", "192.168.1.1", "a" * 64,
         "a..b", "bucket/..", "b\u00fccket", "buck et", ".bucket"])),
    st.builds(lambda i, seg: "/".join(["gs://my-tuning-bucket", "a", "b"][:i] + [seg] + ["c"]),
              st.integers(1, 3), st.sampled_from(["..", ".", ""])),
    st.builds(lambda i, c: OUTPUT[:i] + c + OUTPUT[i:], st.integers(0, len(OUTPUT)), _CONTROL),
    st.just("gs://my-tuning-bucket/" + "x" * 1025),
)


@FUZZ
@given(output=_BAD_OUTPUTS)
def test_an_output_that_is_not_a_clean_gs_uri_is_not_submitted(function, pipelines, capsys, output) -> None:
    _in_vertex(pipelines, SUCCEEDED_JOB, "JOB_STATE_SUCCEEDED", output)
    line = _refused(function, pipelines, capsys, _claiming_success(SUCCEEDED_JOB, output))
    assert "output_uri" in line["message"] and "\n" not in line["message"]


# --------------------------------------------------------- retries and configuration
@pytest.mark.parametrize("status", ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL"])
def test_only_a_transient_vertex_error_fails_the_delivery(function, pipelines, capsys, status) -> None:
    pipelines.tuning_job_faults[SUCCEEDED_JOB] = status
    assert _deliver(function, _claiming_success(SUCCEEDED_JOB)) == 500  # Pub/Sub redelivers
    assert pipelines.job_names() == []
    err = capsys.readouterr().err
    assert '"event":"trigger_retry"' in err and MARKER not in err


@pytest.mark.parametrize("status", ["PERMISSION_DENIED", "INVALID_ARGUMENT", "NOT_FOUND"])
def test_a_vertex_refusal_is_acknowledged(function, pipelines, capsys, status) -> None:
    pipelines.tuning_job_faults[SUCCEEDED_JOB] = status
    _refused(function, pipelines, capsys, _claiming_success(SUCCEEDED_JOB))


def test_vertex_out_of_reach_fails_the_delivery(function, pipelines, monkeypatch, capsys) -> None:
    from tune2serve.localstack.ports import free_port

    monkeypatch.setenv("TUNE2SERVE_VERTEX_API_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert _deliver(function, _claiming_success(SUCCEEDED_JOB)) == 500
    assert '"event":"trigger_retry"' in capsys.readouterr().err


@pytest.mark.parametrize(("env", "problem"), [
    ({"TUNE2SERVE_PROJECT": ""}, "no project is configured"),
    ({"TUNE2SERVE_TUNING_PROJECTS": "my-project,Not A Project"}, "is not a project id or number"),
    ({"TUNE2SERVE_REGION": "us-central1/../x"}, "is not a region"),
    ({"TUNE2SERVE_EXPORT_PREFIX": "gs://my-bucket/exports/../../other"}, "'..' path segment"),
    ({"TUNE2SERVE_EXPORT_PREFIX": "/exports"}, "is not a gs:// URI"),
    ({"TUNE2SERVE_PIPELINE_PARAMS": "[" * 100 + "]" * 100}, "nests deeper"),
])
def test_a_bad_configuration_is_logged_and_acknowledged(function, pipelines, capsys, monkeypatch, env,
                                                        problem) -> None:
    _in_vertex(pipelines, SUCCEEDED_JOB, "JOB_STATE_SUCCEEDED", OUTPUT)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert problem in _refused(function, pipelines, capsys, _claiming_success(SUCCEEDED_JOB))["message"]


# ------------------------------------------------------------- the URI rule itself
_BUCKET_NAME = st.from_regex(r"[a-z0-9][a-z0-9_-]{1,40}[a-z0-9]", fullmatch=True).filter(
    lambda b: not b.startswith("goog") and "google" not in b)
_SEGMENT = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cf", "Cs", "Zl", "Zp"],
                                 exclude_characters="/"), min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@given(bucket=_BUCKET_NAME, segments=st.lists(_SEGMENT, max_size=5), slash=st.booleans())
def test_a_clean_gs_uri_is_accepted_and_normalised(bucket, segments, slash) -> None:
    path = "/".join(segments)
    uri = f"gs://{bucket}/{path}" + ("/" if slash else "")
    assert trigger.checked_gcs_uri(uri, "output") == (f"gs://{bucket}/{path}" if path else f"gs://{bucket}")


@given(output=_BAD_OUTPUTS)
def test_the_gs_uri_rule_refuses_each_bad_class(output) -> None:
    with pytest.raises(trigger.EventRefused):
        trigger.checked_gcs_uri(output, "output")
