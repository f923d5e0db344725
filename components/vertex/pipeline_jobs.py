"""Vertex AI Pipelines through the real SDK: submit a run, follow it, schedule it.

``aiplatform.PipelineJob(...).submit()`` and ``PipelineJob.create_schedule`` /
``aiplatform.PipelineJobSchedule`` do the work, so the requests are the SDK's own, in the
cloud and against the local stack alike (``clients.init_sdk``); on the local stack a run
is created with the same public client call ``submit`` ends with (``_create_local``).
The SDK's INFO chatter is muted while it works (``endpoints.quiet_sdk``); where its log
lines go is set once, by ``logs.configure``. Every API error goes
through ``translate_api_error``; a run's job id is ours to choose, which is what makes
the tuning-job trigger idempotent (a second create answers 409 ALREADY_EXISTS).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.errors import PromotionError, UsageError, VertexError, VertexUserError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.transport import is_unreachable
from tune2serve.components.vertex.clients import VertexTarget, init_sdk
from tune2serve.components.vertex.endpoints import quiet_sdk
from tune2serve.components.vertex.errors import translate_api_error
from tune2serve.components.vertex.retry import PollPolicy, call_with_retry

_log = get_logger("vertex.pipeline_jobs")

JOB_ID_PATTERN = re.compile(r"^[a-z][-a-z0-9]{0,127}$")
TERMINAL_STATES = frozenset({"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"})
RUN_POLL = PollPolicy.every(5.0)  # a pipeline run's state, looked at every 5 s
_RESOURCE = re.compile(r"^projects/([^/]+)/locations/([^/]+)/(pipelineJobs|schedules)/([^/]+)$")


@dataclass(frozen=True)
class RunSpec:
    """Everything one pipeline run is made from (the submit flags, parsed)."""

    template_path: str
    pipeline_root: str
    parameter_values: dict[str, Any]
    display_name: str
    job_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None
    network: str | None = None
    network_attachment: str | None = None  # PSC interface: projects/P/regions/R/networkAttachments/N
    enable_caching: bool | None = None


@dataclass(frozen=True)
class TaskStatus:
    """One task of a run, from the PipelineJob's ``jobDetail.taskDetails`` (what the
    Vertex AI UI draws the graph and task states from)."""

    name: str
    state: str  # PENDING | RUNNING | SUCCEEDED | FAILED | SKIPPED | CANCELLED | NOT_TRIGGERED ...
    seconds: float | None = None  # start to end, once it ended
    error: str | None = None
    artifacts: tuple[tuple[str, str], ...] = ()  # (output name, URI) of its output artifacts


@dataclass(frozen=True)
class RunStatus:
    resource_name: str
    state: str
    console_url: str
    error: str | None = None
    tasks: tuple[TaskStatus, ...] = ()

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    def reports(self) -> list[str]:
        """The URIs of the run's report artifacts (outputs named ``report*``), task by task."""
        return [uri for t in self.tasks for name, uri in t.artifacts if name.startswith("report") and uri]


def changes(before: RunStatus | None, now: RunStatus) -> list[str]:
    """The lines a person following a run reads for what changed since ``before``: the
    run's state once per change, then each task whose state changed (with its time and
    error when it ended)."""
    lines = [f"{now.resource_name}: {now.state}"] if before is None or before.state != now.state else []
    seen = {t.name: t.state for t in before.tasks} if before is not None else {}
    for task in now.tasks:
        if seen.get(task.name) == task.state:
            continue
        took = f" in {task.seconds:.1f} s" if task.seconds is not None else ""
        error = f": {task.error}" if task.error else ""
        lines.append(f"  {task.name} {task.state.lower()}{took}{error}")
    return lines


def _tasks(resource: Any) -> tuple[TaskStatus, ...]:
    """The task details of a PipelineJob resource (none when the service gives none)."""
    out = []
    for detail in resource.job_detail.task_details:
        ended = detail.end_time and detail.start_time
        seconds = (detail.end_time - detail.start_time).total_seconds() if ended else None
        artifacts = tuple((name, a.uri) for name, listed in detail.outputs.items() for a in listed.artifacts)
        out.append(TaskStatus(detail.task_name, detail.state.name, seconds, detail.error.message or None,
                              artifacts))
    return tuple(out)


def console_url(resource_name: str) -> str:
    """The Vertex AI console page of a pipeline run or schedule."""
    match = _RESOURCE.match(resource_name)
    if not match:
        raise UsageError(f"{resource_name!r} is not a pipelineJobs or schedules resource name")
    project, location, kind, rid = match.groups()
    page = "runs" if kind == "pipelineJobs" else "schedules"
    return f"https://console.cloud.google.com/vertex-ai/locations/{location}/pipelines/{page}/{rid}?project={project}"


def full_name(vertex: VertexTarget, kind: str, text: str) -> str:
    """``ID`` or a full resource name → the full name under the target."""
    if _RESOURCE.match(text):
        return text
    if "/" in text or not text:
        raise UsageError(f"{text!r} is neither a {kind} id nor projects/P/locations/L/{kind}/ID")
    return f"{vertex.parent}/{kind}/{text}"


def _call(what: str, fn: Callable[[], Any], resource_name: str | None = None) -> Any:
    """Runs one SDK call, turning API errors into ours and SDK argument checks into usage errors."""
    from google.api_core import exceptions as gexc

    try:
        return fn()
    except PromotionError:
        raise
    except gexc.GoogleAPICallError as e:
        raise translate_api_error(e, resource_name=resource_name) from e
    except ValueError as e:  # the SDK's own checks: job id, labels, display name
        raise UsageError(f"{what}: {e}") from e
    except Exception as e:
        if is_unreachable(e):  # a transport error of any of the SDK's HTTP stacks
            raise translate_api_error(e, resource_name=resource_name) from e
        raise


def _pipeline_job(vertex: VertexTarget, spec: RunSpec) -> Any:
    from google.cloud import aiplatform

    init_sdk(vertex)
    job = _call("pipeline template", lambda: aiplatform.PipelineJob(
        display_name=spec.display_name, template_path=spec.template_path, job_id=spec.job_id,
        pipeline_root=spec.pipeline_root, parameter_values=spec.parameter_values,
        enable_caching=spec.enable_caching, labels=spec.labels or None,
        project=vertex.project, location=vertex.region,
    ))
    if spec.network_attachment:
        # no public setter for a job not yet created (``gca_resource`` refuses until then)
        job._gca_resource.psc_interface_config.network_attachment = spec.network_attachment
    return job


def submit_run(vertex: VertexTarget, spec: RunSpec) -> RunStatus:
    """Creates the PipelineJob. A job id that exists already raises ``VertexUserError``
    with ``status_code`` 409 (the trigger reads that as "already submitted")."""
    job = _pipeline_job(vertex, spec)
    target_name = f"{vertex.parent}/pipelineJobs/{job.job_id}"
    with quiet_sdk():
        if vertex.is_local:
            _check_local_bucket(spec.pipeline_root)
            created = _call("submit", lambda: _create_local(vertex, job, spec), resource_name=target_name)
        else:
            _call("submit", lambda: job.submit(service_account=spec.service_account, network=spec.network),
                  resource_name=target_name)
            created = job.gca_resource
    name = created.name
    log_event(_log, "pipeline_submitted", f"submitted {name}", pipeline_job=name, console_url=console_url(name))
    return RunStatus(name, created.state.name, console_url(name))


def get_run(vertex: VertexTarget, resource_name: str) -> RunStatus:
    from google.cloud import aiplatform

    init_sdk(vertex)
    job = _call("get", lambda: aiplatform.PipelineJob.get(resource_name), resource_name=resource_name)
    error = job.gca_resource.error.message or None
    return RunStatus(job.resource_name, job.gca_resource.state.name, console_url(job.resource_name), error,
                     _tasks(job.gca_resource))


def wait_for_run(vertex: VertexTarget, resource_name: str, *, on_change: Callable[[RunStatus], None] | None = None,
                 poll: PollPolicy = RUN_POLL, timeout_s: float = 24 * 3600.0,
                 sleep: Callable[[float], None] = time.sleep) -> RunStatus:
    """Polls (``poll``) until the run ends, calling ``on_change`` at every change of the
    run's state or of a task's (``changes`` says which); raises ``VertexError`` when
    ``timeout_s`` passes first (the run itself goes on). A run state change is logged at
    INFO, or at DEBUG when ``on_change`` shows it already (said once, not twice)."""
    deadline, last, seen = time.monotonic() + timeout_s, None, None
    for interval in poll.intervals():
        status = call_with_retry(lambda: get_run(vertex, resource_name), what=f"get {resource_name}")
        if status.state != last:
            last = status.state
            log_event(_log, "pipeline_state", f"{resource_name}: {status.state}", logging.DEBUG if on_change
                      else logging.INFO, pipeline_job=resource_name, state=status.state)
        key = (status.state, tuple((t.name, t.state) for t in status.tasks))
        if key != seen:
            seen = key
            if on_change:
                on_change(status)
        if status.done:
            return status
        if time.monotonic() > deadline:
            raise VertexError(f"{resource_name}: still {status.state} after {timeout_s:.0f} s; "
                              f"follow it at {status.console_url}", resource_name=resource_name)
        sleep(interval)
    raise AssertionError("unreachable: a poll policy's intervals do not end")


def _schedule_dict(schedule: Any) -> dict[str, Any]:
    resource = schedule.gca_resource
    return {
        "name": resource.name,
        "display_name": resource.display_name,
        "cron": resource.cron,
        "state": resource.state.name,
        "next_run_time": resource.next_run_time.isoformat() if resource.next_run_time else None,
        "started_run_count": int(resource.started_run_count),
        "max_concurrent_run_count": int(resource.max_concurrent_run_count),
        "console_url": console_url(resource.name),
    }


def create_schedule(vertex: VertexTarget, spec: RunSpec, *, cron: str, display_name: str,
                    max_concurrent_run_count: int = 1, max_run_count: int | None = None,
                    start_time: str | None = None, end_time: str | None = None) -> dict[str, Any]:
    """``PipelineJob.create_schedule``: each firing creates a run from ``spec``."""
    job = _pipeline_job(vertex, spec)
    if vertex.is_local:  # schedules create runs later; the check still tells the user now
        _check_local_bucket(spec.pipeline_root)
    with quiet_sdk():
        schedule = _call("create schedule", lambda: job.create_schedule(
            cron=cron, display_name=display_name, start_time=start_time, end_time=end_time,
            max_run_count=max_run_count, max_concurrent_run_count=max_concurrent_run_count,
            service_account=spec.service_account, network=spec.network,
        ))
    out = _schedule_dict(schedule)
    log_event(_log, "schedule_created", f"created {out['name']} ({cron})", schedule=out["name"], cron=cron)
    return out


def list_schedules(vertex: VertexTarget, display_name: str | None = None) -> list[dict[str, Any]]:
    from google.cloud import aiplatform

    init_sdk(vertex)
    flt = f'display_name="{display_name}"' if display_name else None
    found = _call("list schedules", lambda: aiplatform.PipelineJobSchedule.list(filter=flt))
    return [_schedule_dict(s) for s in found]


def change_schedule(vertex: VertexTarget, name_or_id: str, action: str) -> dict[str, Any]:
    """``pause`` | ``resume`` | ``delete`` one schedule; returns it as it was left."""
    from google.cloud import aiplatform

    if action not in ("pause", "resume", "delete"):
        raise UsageError(f"unknown schedule action {action!r}")
    init_sdk(vertex)
    name = full_name(vertex, "schedules", name_or_id)
    schedule = _call("get schedule", lambda: aiplatform.PipelineJobSchedule.get(name), resource_name=name)
    with quiet_sdk():
        _call(f"{action} schedule", getattr(schedule, action), resource_name=name)
    if action == "delete":
        return {"name": name, "state": "DELETED"}
    return _schedule_dict(aiplatform.PipelineJobSchedule.get(name))


def is_already_exists(error: BaseException) -> bool:
    return isinstance(error, VertexUserError) and error.status_code == 409


def _check_local_bucket(pipeline_root: str) -> None:
    """On the local stack the pipeline root's bucket must exist (checked through the
    storage layer); there is nobody to create it."""
    from tune2serve.components.checkpoint.storage import open_folder, parse_gcs_uri

    bucket, _prefix = parse_gcs_uri(pipeline_root)
    if not open_folder(pipeline_root).store_exists():
        raise UsageError(f"pipeline root {pipeline_root}: bucket {bucket!r} does not exist on the local "
                         "stack's GCS; create it first")


def _create_local(vertex: VertexTarget, job: Any, spec: RunSpec) -> Any:
    """Creates the run on the local stack with the SDK's public client call
    (``PipelineServiceClient.create_pipeline_job``, what ``PipelineJob.submit`` sends),
    with the run-as account and network set as ``submit`` sets them. ``submit`` itself
    first gets or creates the artifacts bucket, which asks Resource Manager (gRPC, the
    real cloudresourcemanager.googleapis.com) for the project number and retries for
    about a minute where that does not exist; ``_check_local_bucket`` is that check
    here. Returns the created ``PipelineJob`` resource."""
    from google.cloud import aiplatform_v1

    resource = aiplatform_v1.PipelineJob.from_json(json.dumps(job.to_dict()))  # the job as submit would send it
    if spec.service_account:
        resource.service_account = spec.service_account
    if spec.network:
        resource.network = spec.network
    return job.api_client.create_pipeline_job(parent=vertex.parent, pipeline_job=resource, pipeline_job_id=job.job_id)
