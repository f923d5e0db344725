"""The tuning-job trigger: a Cloud Function (functions-framework, CloudEvent) that submits
the promotion pipeline when a tuning job succeeds — exactly once per tuning job.

Events it understands (docs/OPERATIONS.md shows the gcloud commands that wire them):
- Pub/Sub ``google.cloud.pubsub.topic.v1.messagePublished`` from a Cloud Logging sink:
  ``data.message.data`` is the base64 JSON of the LogEntry about the job's state change;
- Eventarc Cloud Audit Logs ``google.cloud.audit.log.v1.written``: ``data`` is the
  LogEntry itself.

Trust: anyone who can publish to the topic can send any event, so the event is believed
only for *which* tuning job to look at (``protoPayload.resourceName``, a ``jsonPayload``
field, or ``resource.labels``). That name must be ``projects/P/locations/L/tuningJobs/ID``
with P one of the configured projects, L a region and ID Vertex's id syntax (digits). The
job's state and output are then read from Vertex AI (``GenAiTuningService.GetTuningJob``,
v1beta1, which has ``output_uri``), never from the event; the output must be a ``gs://``
URI with a valid bucket name, no control characters and no ``.``/``..`` segment; and
``export_dest`` is built from the configured prefix and the job's checked id.

Exactly once: the run's job id is derived from the tuning job's name, so a redelivered
event's create answers 409 ALREADY_EXISTS, read as "already submitted". Anything but
``JOB_STATE_SUCCEEDED`` is acknowledged and ignored. Every event the trigger cannot or
will not act on (malformed, forged, a bad configuration, a 4xx, even a bug of ours) is
logged as one line naming the problem — never the payload — and acknowledged: a
redelivery would fail the same way, and a poison message would be redelivered until it
expires. Only a transient Vertex error (429/5xx, a dropped connection) fails the
delivery, so Pub/Sub retries it.

Configuration (environment of the function, read per event):
``TUNE2SERVE_PIPELINE_ROOT`` (required, gs://), ``TUNE2SERVE_PROJECT`` (required unless
``TUNE2SERVE_TUNING_PROJECTS`` is set: where the runs go), ``TUNE2SERVE_TUNING_PROJECTS``
(comma-separated project ids or numbers whose tuning jobs are promoted; default
``TUNE2SERVE_PROJECT``), ``TUNE2SERVE_REGION`` (default: the tuning job's),
``TUNE2SERVE_TEMPLATE`` (default compiled/promote_checkpoint.yaml beside the function
source), ``TUNE2SERVE_PIPELINE_PARAMS`` (JSON object of fixed parameters),
``TUNE2SERVE_SOURCE_PARAMETER`` (default ``source``), ``TUNE2SERVE_SERVICE_ACCOUNT``,
``TUNE2SERVE_NETWORK``, ``TUNE2SERVE_EXPORT_PREFIX`` (gs://; each tuning job's export
goes to PREFIX/<tuning job id>, the ``export_dest`` parameter).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import traceback
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import functions_framework

from tune2serve.components import logs
from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.errors import EventRefused, PromotionError, UsageError, VertexUnavailableError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.vertex.resources import ResourceName

_log = get_logger("trigger")

SUCCEEDED = "JOB_STATE_SUCCEEDED"
PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
AUDIT_LOG_TYPE = "google.cloud.audit.log.v1.written"
EXPORT_PARAMETER = "export_dest"
TUNING_JOBS = "tuningJobs"
# Cloud Logging caps a LogEntry at 256 KB; four times that is no real entry.
MAX_LOG_ENTRY_BYTES = 1024 * 1024
_MAX_BASE64_CHARS = 4 * ((MAX_LOG_ENTRY_BYTES + 2) // 3)
MAX_GCS_OBJECT_BYTES = 1024  # GCS's own limit on an object name
READ_TIMEOUT_S = 30.0
# Project ids (6-30 of [a-z0-9-], a letter first) or project numbers; regions such as
# us-central1 or northamerica-northeast1; Vertex's resource ids are int64 in decimal.
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20}")
_REGION = re.compile(r"[a-z]{2,}-[a-z]{2,}[0-9]{1,2}")
_JOB_ID = re.compile(r"[0-9]{1,19}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9_.-]*[a-z0-9]")
_IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_SHOWN = re.compile(r"[\x21-\x7e]{1,128}")
_MAX_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class TuningJobState:
    """What Vertex AI says about a tuning job: the only source of its state and output."""

    tuning_job: str  # projects/P/locations/L/tuningJobs/ID
    state: str
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
    tuning_projects: tuple[str, ...] = ()  # the projects whose tuning jobs are promoted

    @classmethod
    def from_env(cls) -> TriggerConfig:
        env = os.environ
        root = env.get("TUNE2SERVE_PIPELINE_ROOT", "")
        if not root:
            raise UsageError("TUNE2SERVE_PIPELINE_ROOT is not set; deploy the function with "
                             "--set-env-vars TUNE2SERVE_PIPELINE_ROOT=gs://BUCKET/PREFIX")
        try:
            params = bounded_json.loads(env.get("TUNE2SERVE_PIPELINE_PARAMS") or "{}", "TUNE2SERVE_PIPELINE_PARAMS")
        except bounded_json.JsonLimitError as e:
            raise UsageError(str(e)) from e
        if not isinstance(params, dict):
            raise UsageError("TUNE2SERVE_PIPELINE_PARAMS must be a JSON object of parameter names to values")
        project = env.get("TUNE2SERVE_PROJECT") or None
        region = env.get("TUNE2SERVE_REGION") or None
        if region is not None and not _REGION.fullmatch(region):
            raise UsageError(f"TUNE2SERVE_REGION={region!r} is not a region such as us-central1")
        prefix = env.get("TUNE2SERVE_EXPORT_PREFIX") or None
        default_template = Path(__file__).resolve().parents[1] / "compiled" / "promote_checkpoint.yaml"
        return cls(root, env.get("TUNE2SERVE_TEMPLATE") or str(default_template), project, region, params,
                   env.get("TUNE2SERVE_SOURCE_PARAMETER") or "source",
                   env.get("TUNE2SERVE_SERVICE_ACCOUNT") or None, env.get("TUNE2SERVE_NETWORK") or None,
                   checked_gcs_uri(prefix, "TUNE2SERVE_EXPORT_PREFIX", UsageError) if prefix else None,
                   _tuning_projects(env.get("TUNE2SERVE_TUNING_PROJECTS") or "", project))


def _tuning_projects(listed: str, project: str | None) -> tuple[str, ...]:
    """The configured projects: TUNE2SERVE_TUNING_PROJECTS, else TUNE2SERVE_PROJECT. One
    is required — the event's own project is exactly what must not be believed."""
    projects = tuple(p.strip() for p in listed.split(",") if p.strip()) or ((project,) if project else ())
    if not projects:
        raise UsageError("no project is configured: set TUNE2SERVE_PROJECT (the project whose tuning jobs are "
                         "promoted and where runs go) or TUNE2SERVE_TUNING_PROJECTS (a comma-separated list)")
    bad = [p for p in projects if not _PROJECT.fullmatch(p)]
    if bad:
        raise UsageError(f"TUNE2SERVE_TUNING_PROJECTS / TUNE2SERVE_PROJECT: {bad[0]!r} is not a project id or number")
    return projects


@dataclass(frozen=True)
class TriggerOutcome:
    action: str  # submitted | already_submitted | ignored
    reason: str
    tuning_job: str | None = None
    pipeline_job: str | None = None


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages that must not quote it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)


def _object(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """``parent[key]`` when it is an object, {} when absent or null; anything else is refused."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventRefused(f"{path} is {_json_type(value)}, not an object")
    return value


def _string(parent: dict[str, Any], key: str, path: str) -> str | None:
    """``parent[key]`` when it is a non-empty string, None when absent, null or empty."""
    value = parent.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EventRefused(f"{path} is {_json_type(value)}, not a string")
    return value


def shown(value: Any) -> str:
    """An event-supplied value fit for a log line: printable ASCII of at most 128
    characters as it is, anything else described (a log line never carries the payload)."""
    if isinstance(value, str) and _SHOWN.fullmatch(value):
        return value
    if isinstance(value, str):
        return f"(a string of {len(value)} characters, not shown)"
    return f"({_json_type(value)})"


def log_entry_from_event(ce_type: Any, data: Any) -> dict[str, Any]:
    """The LogEntry a CloudEvent carries (Pub/Sub: base64 in message.data; audit log:
    data), through the bounded JSON reader: size and nesting depth checked before parsing."""
    if ce_type == PUBSUB_TYPE:
        if not isinstance(data, dict):
            raise EventRefused(f"Pub/Sub event: data is {_json_type(data)}, not an object with a message")
        message = _object(data, "message", "Pub/Sub event: data.message")
        encoded = message.get("data")
        if not isinstance(encoded, str) or not encoded:
            raise EventRefused(f"Pub/Sub event: data.message.data is {_json_type(encoded)}, not base64 text")
        if len(encoded) > _MAX_BASE64_CHARS:
            raise EventRefused(f"Pub/Sub event: data.message.data is {len(encoded)} characters, above the "
                               f"{_MAX_BASE64_CHARS} of a {MAX_LOG_ENTRY_BYTES}-byte LogEntry")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as e:
            raise EventRefused("Pub/Sub event: data.message.data is not base64") from e
        return _bounded_object(raw, "Pub/Sub event: the LogEntry in data.message.data")
    if ce_type == AUDIT_LOG_TYPE:
        if isinstance(data, (bytes, bytearray, str)):
            return _bounded_object(data, "audit log event: data")
        try:  # already parsed by functions-framework: measured the same way as the Pub/Sub path
            raw = json.dumps(data, allow_nan=False)
        except (RecursionError, ValueError, TypeError) as e:
            raise EventRefused(f"audit log event: data is not a JSON LogEntry ({type(e).__name__})") from e
        return _bounded_object(raw, "audit log event: data")
    raise EventRefused(f"event type {shown(ce_type)} is not handled; expected {PUBSUB_TYPE} or {AUDIT_LOG_TYPE}")


def _bounded_object(raw: bytes | bytearray | str, what: str) -> dict[str, Any]:
    """``bounded_json.load_object`` with the LogEntry's size cap; its error (which may
    quote a fragment of the payload) becomes a refusal that does not."""
    try:
        return bounded_json.load_object(bytes(raw) if isinstance(raw, bytearray) else raw, what,
                                        max_bytes=MAX_LOG_ENTRY_BYTES)
    except bounded_json.JsonLimitError as e:
        raise EventRefused(_clipped(str(e))) from e


def _clipped(message: str) -> str:
    """A message of at most ``_MAX_MESSAGE_CHARS`` printable characters."""
    text = "".join(c if c.isprintable() else "?" for c in message)
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[:_MAX_MESSAGE_CHARS] + "…"


def parse_log_entry(entry: dict[str, Any]) -> str:
    """The name of the tuning job the LogEntry is about — the only thing read from it —
    from ``protoPayload.resourceName``, a ``jsonPayload`` field, ``protoPayload.response``
    or ``resource.labels``. A field read here that has the wrong JSON type, or two fields
    naming different jobs, refuse the event. The name is not checked yet (see
    ``checked_tuning_job``)."""
    proto = _object(entry, "protoPayload", "LogEntry.protoPayload")
    payload = _object(entry, "jsonPayload", "LogEntry.jsonPayload")
    response = _object(proto, "response", "LogEntry.protoPayload.response")
    fields = [(proto, "resourceName", "LogEntry.protoPayload.resourceName"),
              (payload, "tuningJob", "LogEntry.jsonPayload.tuningJob"), (payload, "name", "LogEntry.jsonPayload.name"),
              (payload, "resourceName", "LogEntry.jsonPayload.resourceName"),
              (response, "name", "LogEntry.protoPayload.response.name")]
    named: dict[str, str] = {}
    for parent, key, path in fields:
        value = _string(parent, key, path)
        if value is not None and f"/{TUNING_JOBS}/" in value:
            named.setdefault(value, path)
    if len(named) > 1:
        raise EventRefused(f"the LogEntry names different tuning jobs in {' and '.join(sorted(named.values()))}")
    if named:
        return next(iter(named))
    return _named_by_labels(entry)


def _named_by_labels(entry: dict[str, Any]) -> str:
    """The tuning job from ``resource.labels`` (its id, project and location), the project
    falling back to ``logName``'s ``projects/P/...``."""
    labels = _object(_object(entry, "resource", "LogEntry.resource"), "labels", "LogEntry.resource.labels")
    path = "LogEntry.resource.labels."
    job_id = _string(labels, "tuning_job_id", path + "tuning_job_id") or _string(labels, "job_id", path + "job_id")
    project = _string(labels, "project_id", path + "project_id") or _string(labels, "resource_container",
                                                                           path + "resource_container")
    if project is None:
        log_name = _string(entry, "logName", "LogEntry.logName") or ""
        project = log_name.split("/")[1] if log_name.startswith("projects/") else None
    location = _string(labels, "location", path + "location") or _string(labels, "region", path + "region")
    if not (job_id and project and location):
        raise EventRefused("the LogEntry names no tuning job: expected projects/P/locations/L/tuningJobs/ID in "
                           "protoPayload.resourceName or jsonPayload, or resource.labels with the job id, "
                           "project and location")
    return f"projects/{project}/locations/{location}/{TUNING_JOBS}/{job_id}"


def checked_tuning_job(name: str, projects: Collection[str]) -> ResourceName:
    """The tuning job the event names, if the trigger may look at it: exactly
    ``projects/P/locations/L/tuningJobs/ID`` with P one of ``projects``, L a region and ID
    digits (Vertex's id syntax, so no ``..``, slash or space can reach a path built from it)."""
    parts = name.split("/")
    if len(parts) != 6 or parts[0] != "projects" or parts[2] != "locations" or parts[4] != TUNING_JOBS:
        raise EventRefused("the LogEntry's tuning job is not named projects/P/locations/L/tuningJobs/ID")
    _, project, _, location, _, job_id = parts
    if not _PROJECT.fullmatch(project):
        raise EventRefused("the LogEntry's tuning job is in a project whose name is not a project id or number")
    if project not in projects:
        raise EventRefused(f"the LogEntry's tuning job is in project {project!r}, not a configured project "
                           f"({', '.join(sorted(projects))}); its jobs are not promoted here")
    if not _REGION.fullmatch(location):
        raise EventRefused("the LogEntry's tuning job location is not a region such as us-central1")
    if not _JOB_ID.fullmatch(job_id):
        raise EventRefused(f"the LogEntry's tuning job id is not a Vertex AI id (digits) in project {project!r}")
    return ResourceName(TUNING_JOBS, project, location, job_id)


def valid_bucket_name(bucket: str) -> bool:
    """Cloud Storage's bucket naming rules: [a-z0-9_.-], a letter or digit at each end,
    3-63 characters (222 with dots, 63 per dot-separated part), not an IPv4 address, not
    ``goog``-prefixed and no ``google``."""
    if not 3 <= len(bucket) <= 222 or not _BUCKET.fullmatch(bucket) or _IPV4.fullmatch(bucket):
        return False
    parts = bucket.split(".")
    if len(parts) == 1 and len(bucket) > 63 or any(not p or len(p) > 63 for p in parts):
        return False
    return not (bucket.startswith("goog") or "google" in bucket)


def _has_control(text: str) -> bool:
    """True when ``text`` holds a control, format, line/paragraph-separator or surrogate
    character: anything that could split a log line, a parameter or a path."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)


def checked_gcs_uri(uri: str, what: str, error: type[PromotionError] = EventRefused) -> str:
    """``uri`` normalised (no trailing slash) when it is ``gs://BUCKET[/PATH]`` with a valid
    bucket name, no control characters, no empty, ``.`` or ``..`` segment and an object
    path within GCS's 1,024 bytes; ``error`` naming ``what`` otherwise (the value itself is
    quoted only when it is plain printable text)."""
    if _has_control(uri):
        raise error(f"{what} holds a control character")
    if not uri.startswith("gs://"):
        raise error(f"{what} {shown(uri)} is not a gs:// URI")
    bucket, _, path = uri[len("gs://"):].partition("/")
    if not valid_bucket_name(bucket):
        raise error(f"{what} {shown(uri)} does not name a valid Cloud Storage bucket")
    path = path.rstrip("/")
    if path and any(part in ("", ".", "..") for part in path.split("/")):
        raise error(f"{what} {shown(uri)} has an empty, '.' or '..' path segment")
    if len(path.encode("utf-8")) > MAX_GCS_OBJECT_BYTES:
        raise error(f"{what} has a path of more than {MAX_GCS_OBJECT_BYTES} bytes")
    return f"gs://{bucket}/{path}" if path else f"gs://{bucket}"


def pipeline_job_id(tuning_job: str) -> str:
    """The run's id for a tuning job: the same every time, unique per job, valid for Vertex."""
    tail = re.sub("[^a-z0-9-]+", "-", tuning_job.rsplit("/", 1)[-1].lower()).strip("-")[:80]
    digest = hashlib.sha256(tuning_job.encode()).hexdigest()[:10]
    return f"tune2serve-tuning-{tail}-{digest}"


def read_tuning_job(vertex: Any, name: str) -> TuningJobState:
    """The tuning job's state and output URI from Vertex AI (v1beta1 has ``output_uri``).
    Every failure becomes our ``VertexError``: 429/5xx and dropped connections as
    ``VertexUnavailableError`` (retried by redelivery), the rest as not retryable."""
    from google.cloud import aiplatform_v1beta1

    from tune2serve.components.vertex.clients import credentials
    from tune2serve.components.vertex.errors import translate_api_error

    endpoint = vertex.api_endpoint or f"{vertex.region}-aiplatform.googleapis.com"
    try:
        client = aiplatform_v1beta1.GenAiTuningServiceClient(
            credentials=credentials(vertex), transport="rest", client_options={"api_endpoint": endpoint})
        job = client.get_tuning_job(name=name, timeout=READ_TIMEOUT_S)
    except Exception as e:  # google.api_core and transport errors alike, translated once
        raise translate_api_error(e, resource_name=name) from e
    state = getattr(job.state, "name", None) or f"state {int(job.state)}"
    return TuningJobState(name, state, job.output_uri or None)


def handle_tuning_event(ce_type: Any, data: Any, config: TriggerConfig) -> TriggerOutcome:
    """Decides and acts on one event; the function body, testable on its own. The event
    only says which job; Vertex AI says whether it succeeded and where its output is."""
    from tune2serve.components.vertex.clients import target
    from tune2serve.components.vertex.pipeline_jobs import is_already_exists
    from tune2serve.pipelines import submit

    job = checked_tuning_job(parse_log_entry(log_entry_from_event(ce_type, data)), config.tuning_projects)
    name = str(job)
    found = read_tuning_job(target(job.project, job.location), name)
    if found.state != SUCCEEDED:
        return TriggerOutcome("ignored", f"{name} is {found.state}, not {SUCCEEDED} (as Vertex AI reports it)", name)
    if not found.output_uri:
        return TriggerOutcome("ignored", f"{name} succeeded but has no output_uri to promote", name)
    source = checked_gcs_uri(found.output_uri, f"{name}'s output_uri")
    vertex = target(config.project or job.project, config.region or job.location)
    prepared = _prepare(config, vertex, job, source)
    try:
        status = submit.submit(prepared)
    except PromotionError as e:
        if is_already_exists(e):
            run = f"{vertex.parent}/pipelineJobs/{prepared.run_spec.job_id}"
            return TriggerOutcome("already_submitted", f"{run} exists: this event was handled before", name, run)
        raise
    return TriggerOutcome("submitted", f"promoting {source}", name, status.resource_name)


def _prepare(config: TriggerConfig, vertex: Any, job: ResourceName, source: str) -> Any:
    """The submission: ``source`` the checked output, ``export_dest`` the configured
    prefix (checked when read) joined with the job's checked id."""
    from tune2serve.pipelines import submit

    template = submit.load_template(config.template)
    params = {**config.parameters, config.source_parameter: source}
    if config.export_prefix:  # one export folder per tuning job: an export_dest never holds two
        params[EXPORT_PARAMETER] = f"{config.export_prefix}/{job.id}"
    values = submit.resolve_parameters(template, params, {},
                                       defaults=submit.target_defaults(vertex, config.service_account))
    return submit.prepare_from_values(
        vertex=vertex, template=template, pipeline_root=config.pipeline_root, values=values,
        job_id=pipeline_job_id(str(job)), labels={"tune2serve-trigger": "tuning-job"},
        service_account=config.service_account, network=config.network,
    )


def _attribute(event: Any, key: str) -> Any:
    """A CloudEvent attribute, or None when the event lacks it."""
    try:
        return event[key]
    except (KeyError, TypeError, AttributeError):
        return None


def _where(error: BaseException) -> str:
    """``file:line`` of the innermost frame of ``error``: where a bug is, without its message."""
    frames = traceback.extract_tb(error.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


@functions_framework.cloud_event
def on_tuning_job_event(event: Any) -> None:
    """Cloud Function entry point (``--entry-point on_tuning_job_event``). Logs are one
    JSON line each on stderr, which Cloud Logging reads with their severity. Returns (the
    delivery is acknowledged) for everything but a transient Vertex error, which is
    raised so that Pub/Sub redelivers the event."""
    logs.configure()
    event_id = shown(_attribute(event, "id"))
    try:
        outcome = handle_tuning_event(_attribute(event, "type"), getattr(event, "data", None),
                                      TriggerConfig.from_env())
    except VertexUnavailableError as e:
        log_event(_log, "trigger_retry", f"event {event_id}: {_clipped(str(e))}; failing the delivery so "
                  "Pub/Sub retries it", logging.WARNING, event_id=event_id)
        raise
    except PromotionError as e:
        log_event(_log, "trigger_error", f"event {event_id} not handled: {_clipped(str(e))}", logging.ERROR,
                  event_id=event_id, error=type(e).__name__)
        return
    except Exception as e:  # a bug of ours must not make one event a poison message
        log_event(_log, "trigger_error", f"event {event_id} not handled: internal error {type(e).__name__} at "
                  f"{_where(e)}; acknowledged, since a redelivery would fail the same way", logging.ERROR,
                  event_id=event_id, error=type(e).__name__)
        return
    log_event(_log, f"trigger_{outcome.action}", outcome.reason, event_id=event_id,
              tuning_job=outcome.tuning_job, pipeline_job=outcome.pipeline_job, action=outcome.action)
