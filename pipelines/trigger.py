"""The tuning-job trigger: a Cloud Function (functions-framework, CloudEvent) that submits
the promotion pipeline when a tuning job succeeds — exactly once per tuning job.

Events it understands (docs/OPERATIONS.md shows the gcloud commands that wire them):
- Pub/Sub ``google.cloud.pubsub.topic.v1.messagePublished`` from a Cloud Logging sink:
  ``data.message.data`` is the base64 JSON of the LogEntry about the job's state change;
- Eventarc Cloud Audit Logs ``google.cloud.audit.log.v1.written``: ``data`` is the
  LogEntry itself.
The LogEntry names the tuning job (``protoPayload.resourceName``, a ``jsonPayload``
field, or ``resource.labels``) and usually its state and output URI. What it lacks is
read from the tuning job itself (``GenAiTuningService.GetTuningJob``, v1beta1, which has
``output_uri``).

Exactly once: the run's job id is derived from the tuning job's name, so a redelivered
event's create answers 409 ALREADY_EXISTS, read as "already submitted". Anything but
``JOB_STATE_SUCCEEDED`` is acknowledged and ignored. Problems a retry cannot fix (a
malformed event, a bad configuration, a 4xx) are logged and acknowledged; transient ones
(429/5xx) raise, so Pub/Sub redelivers.

Configuration (environment of the function, read per event):
``TUNE2SERVE_PIPELINE_ROOT`` (required, gs://), ``TUNE2SERVE_TEMPLATE`` (default
compiled/promote_checkpoint.yaml beside the function source), ``TUNE2SERVE_PROJECT`` /
``TUNE2SERVE_REGION`` (default: the tuning job's), ``TUNE2SERVE_PIPELINE_PARAMS`` (JSON
object of fixed parameters), ``TUNE2SERVE_SOURCE_PARAMETER`` (default ``source``),
``TUNE2SERVE_SERVICE_ACCOUNT``, ``TUNE2SERVE_NETWORK``, ``TUNE2SERVE_EXPORT_PREFIX`` (gs://;
each tuning job's export goes to PREFIX/<tuning job id>, the ``export_dest`` parameter).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import functions_framework

from tune2serve.components.errors import PromotionError, UsageError, VertexUnavailableError
from tune2serve.components import logs
from tune2serve.components.logs import get_logger, log_event

_log = get_logger("trigger")

SUCCEEDED = "JOB_STATE_SUCCEEDED"
PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
AUDIT_LOG_TYPE = "google.cloud.audit.log.v1.written"
EXPORT_PARAMETER = "export_dest"
_TUNING_JOB = re.compile(r"projects/([^/]+)/locations/([^/]+)/tuningJobs/([^/\s\"]+)")


@dataclass(frozen=True)
class TuningJobEvent:
    tuning_job: str  # projects/P/locations/L/tuningJobs/ID
    state: str | None
    output_uri: str | None


@dataclass(frozen=True)
class TriggerConfig:
    pipeline_root: str
    template: str
    project: str | None = None
    region: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    source_parameter: str = "source"
    service_account: str | None = None
    network: str | None = None
    export_prefix: str | None = None  # each tuning job's export goes to PREFIX/<job id>

    @classmethod
    def from_env(cls) -> TriggerConfig:
        env = os.environ
        root = env.get("TUNE2SERVE_PIPELINE_ROOT", "")
        if not root:
            raise UsageError("TUNE2SERVE_PIPELINE_ROOT is not set; deploy the function with "
                             "--set-env-vars TUNE2SERVE_PIPELINE_ROOT=gs://BUCKET/PREFIX")
        try:
            params = json.loads(env.get("TUNE2SERVE_PIPELINE_PARAMS") or "{}")
        except json.JSONDecodeError as e:
            raise UsageError(f"TUNE2SERVE_PIPELINE_PARAMS is not JSON: {e}") from e
        if not isinstance(params, dict):
            raise UsageError("TUNE2SERVE_PIPELINE_PARAMS must be a JSON object of parameter names to values")
        default_template = Path(__file__).resolve().parents[1] / "compiled" / "promote_checkpoint.yaml"
        return cls(root, env.get("TUNE2SERVE_TEMPLATE") or str(default_template),
                   env.get("TUNE2SERVE_PROJECT") or None, env.get("TUNE2SERVE_REGION") or None, params,
                   env.get("TUNE2SERVE_SOURCE_PARAMETER") or "source",
                   env.get("TUNE2SERVE_SERVICE_ACCOUNT") or None, env.get("TUNE2SERVE_NETWORK") or None,
                   (env.get("TUNE2SERVE_EXPORT_PREFIX") or "").rstrip("/") or None)


@dataclass(frozen=True)
class TriggerOutcome:
    action: str  # submitted | already_submitted | ignored
    reason: str
    tuning_job: str | None = None
    pipeline_job: str | None = None


def log_entry_from_event(ce_type: str, data: Any) -> dict[str, Any]:
    """The LogEntry a CloudEvent carries (Pub/Sub: base64 in message.data; audit log: data)."""
    if ce_type == PUBSUB_TYPE:
        try:
            raw = base64.b64decode(data["message"]["data"], validate=True)
            entry = json.loads(raw)
        except (KeyError, TypeError, binascii.Error, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"Pub/Sub event: message.data is not base64 JSON of a LogEntry ({type(e).__name__}: {e})") from e
    elif ce_type == AUDIT_LOG_TYPE:
        entry = data
    else:
        raise UsageError(f"event type {ce_type!r} is not handled; expected {PUBSUB_TYPE} or {AUDIT_LOG_TYPE}")
    if not isinstance(entry, dict):
        raise UsageError(f"event data is a {type(entry).__name__}, not a LogEntry object")
    return entry


def _first(*values: Any) -> str | None:
    return next((str(v) for v in values if isinstance(v, str) and v), None)


def parse_log_entry(entry: dict[str, Any]) -> TuningJobEvent:
    """The tuning job, its state and output URI, from wherever the LogEntry has them."""
    payload = entry.get("jsonPayload") or {}
    proto = entry.get("protoPayload") or {}
    response = proto.get("response") or {}
    labels = (entry.get("resource") or {}).get("labels") or {}
    named = _first(proto.get("resourceName"), payload.get("tuningJob"), payload.get("name"),
                   payload.get("resourceName"), response.get("name"))
    match = _TUNING_JOB.search(named or "")
    if match:
        name = match.group(0)
    else:
        job_id = _first(labels.get("tuning_job_id"), labels.get("job_id"))
        project = _first(labels.get("project_id"), labels.get("resource_container"),
                         (entry.get("logName") or "").split("/")[1] if entry.get("logName", "").startswith("projects/") else None)
        location = _first(labels.get("location"), labels.get("region"))
        if not (job_id and project and location):
            raise UsageError("LogEntry names no tuning job: expected projects/P/locations/L/tuningJobs/ID in "
                             "protoPayload.resourceName or jsonPayload, or resource.labels with the job id, "
                             "project and location")
        name = f"projects/{project}/locations/{location}/tuningJobs/{job_id}"
    state = _first(payload.get("state"), response.get("state"), (proto.get("metadata") or {}).get("state"))
    output = _first(payload.get("outputUri"), payload.get("output_uri"), response.get("outputUri"))
    return TuningJobEvent(name, state, output)


def pipeline_job_id(tuning_job: str) -> str:
    """The run's id for a tuning job: the same every time, unique per job, valid for Vertex."""
    job = _TUNING_JOB.fullmatch(tuning_job)
    tail = re.sub("[^a-z0-9-]+", "-", (job.group(3) if job else tuning_job).lower()).strip("-")[:80]
    digest = hashlib.sha256(tuning_job.encode()).hexdigest()[:10]
    return f"tune2serve-tuning-{tail}-{digest}"


def read_tuning_job(vertex: Any, name: str) -> TuningJobEvent:
    """The tuning job's state and output URI from Vertex AI (v1beta1 has ``output_uri``)."""
    from google.api_core import exceptions as gexc
    from google.cloud import aiplatform_v1beta1

    from tune2serve.components.vertex.clients import credentials
    from tune2serve.components.vertex.errors import translate_api_error

    endpoint = vertex.api_endpoint or f"{vertex.region}-aiplatform.googleapis.com"
    client = aiplatform_v1beta1.GenAiTuningServiceClient(
        credentials=credentials(vertex), transport="rest", client_options={"api_endpoint": endpoint})
    try:
        job = client.get_tuning_job(name=name)
    except gexc.GoogleAPICallError as e:
        raise translate_api_error(e, resource_name=name) from e
    return TuningJobEvent(name, job.state.name, job.output_uri or None)


def handle_tuning_event(ce_type: str, data: Any, config: TriggerConfig) -> TriggerOutcome:
    """Decides and acts on one event; the function body, testable on its own."""
    from tune2serve.components.vertex.clients import target
    from tune2serve.components.vertex.pipeline_jobs import is_already_exists
    from tune2serve.pipelines import submit

    event = parse_log_entry(log_entry_from_event(ce_type, data))
    _, job_project, _, job_region, *_ = event.tuning_job.split("/")
    vertex = target(config.project or job_project, config.region or job_region)
    if event.state is None or (event.state == SUCCEEDED and event.output_uri is None):
        event = read_tuning_job(target(job_project, job_region), event.tuning_job)
    if event.state != SUCCEEDED:
        return TriggerOutcome("ignored", f"{event.tuning_job} is {event.state}, not {SUCCEEDED}", event.tuning_job)
    if not event.output_uri:
        return TriggerOutcome("ignored", f"{event.tuning_job} succeeded but has no output_uri to promote", event.tuning_job)
    prepared = _prepare(config, vertex, event)
    try:
        status = submit.submit(prepared)
    except PromotionError as e:
        if is_already_exists(e):
            name = f"{vertex.parent}/pipelineJobs/{prepared.run_spec.job_id}"
            return TriggerOutcome("already_submitted", f"{name} exists: this event was handled before",
                                  event.tuning_job, name)
        raise
    return TriggerOutcome("submitted", f"promoting {event.output_uri}", event.tuning_job, status.resource_name)


def _prepare(config: TriggerConfig, vertex: Any, event: TuningJobEvent) -> Any:
    from tune2serve.pipelines import submit

    template = submit.load_template(config.template)
    params = {**config.parameters, config.source_parameter: event.output_uri}
    if config.export_prefix:  # one export folder per tuning job: an export_dest never holds two
        params[EXPORT_PARAMETER] = f"{config.export_prefix}/{event.tuning_job.rsplit('/', 1)[-1]}"
    values = submit.resolve_parameters(template, params, {},
                                       defaults=submit.target_defaults(vertex, config.service_account))
    return submit.prepare_from_values(
        vertex=vertex, template=template, pipeline_root=config.pipeline_root, values=values,
        job_id=pipeline_job_id(event.tuning_job), labels={"tune2serve-trigger": "tuning-job"},
        service_account=config.service_account, network=config.network,
    )


@functions_framework.cloud_event
def on_tuning_job_event(event: Any) -> None:
    """Cloud Function entry point (``--entry-point on_tuning_job_event``). Logs are one
    JSON line each on stderr, which Cloud Logging reads with their severity."""
    logs.configure()
    try:
        outcome = handle_tuning_event(event["type"], event.data, TriggerConfig.from_env())
    except VertexUnavailableError:
        raise  # transient: fail the delivery so Pub/Sub retries it
    except PromotionError as e:
        log_event(_log, "trigger_error", f"event {event['id']} not handled: {e}", logging.ERROR, event_id=event["id"])
        return
    log_event(_log, f"trigger_{outcome.action}", outcome.reason, event_id=event["id"],
              tuning_job=outcome.tuning_job, pipeline_job=outcome.pipeline_job, action=outcome.action)
