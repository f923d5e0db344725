"""GCPC's custom-job task, run by kfp.local: the DAG's custom-job branch on this machine.

``create_custom_training_job_from_component`` (the export worker on a named machine)
compiles to a *container* component: GCPC's launcher (``python3 -m
google_cloud_pipeline_components.container.v1.custom_job.launcher --type CustomJob
--payload ... --project ... --location ... --gcp_resources ...``), whose placeholders the
Vertex AI Pipelines backend resolves, and which creates a CustomJob and polls it.
kfp.local's SubprocessRunner runs lightweight Python components only, and the launcher
cannot be pointed at the local stack as it is: it builds its ``JobServiceClient`` with
the endpoint fixed to ``{location}-aiplatform.googleapis.com``, gRPC and Application
Default Credentials, none of which an argument or variable changes.

So ``runnable_locally`` swaps each launcher executor in the spec kfp.local runs for a
lightweight one (``run_custom_job_launcher``, made with the project's ``step_component``)
that carries the launcher's compiled command line in its environment. At run time
``launch`` does what the backend and the launcher do together, with GCPC's own code
where it can be called as it is:

1. the backend's part: the launcher's placeholders resolved from the task's executor
   input (``{{$.inputs.parameters[...]}}``, nested ones typed — the machine type and
   disk size the pipeline feeds into ``worker_pool_specs`` —, ``{{$.json_escape[1]}}``:
   the executor input itself, escaped once, which the worker's own executor reads; the
   ``{{$.pipeline_google_cloud_*}}`` defaults: the run's project and region);
2. the launcher's part: its argument parser (``parser_util.parse_default_args``), its
   payload handling (``insert_system_labels_into_payload``, ``recursive_remove_empty``),
   its create and get calls (``create_custom_job_with_client``,
   ``get_custom_job_with_client``) given the SDK's JobServiceClient pointed at the target
   (``clients.job_service_client``: the local stack's customJobs API, or Vertex AI), its
   ``gcp_resources`` output; the job polled with the project's poll policy until it ends.

The local customJobs API (localstack/custom_jobs.py) runs the worker pool's command as a
local process, so the worker writes and stages its shards exactly as the pipeline-step
worker does.
"""

# No `from __future__ import annotations`: KFP reads the real type objects of signatures.
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from kfp import dsl

from tune2serve.components.vertex.retry import PollPolicy

LAUNCHER_MODULE = "google_cloud_pipeline_components.container.v1.custom_job.launcher"
LAUNCHER_ENV = "TUNE2SERVE_GCPC_LAUNCHER"  # the launcher's compiled command line, as JSON
PROJECT_ENV, LOCATION_ENV = "TUNE2SERVE_PIPELINE_PROJECT", "TUNE2SERVE_PIPELINE_LOCATION"
JOB_POLL = PollPolicy(initial_interval_s=0.5, max_interval_s=20.0, multiplier=1.5)  # GCPC polls every 20 s
ENDED = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_PAUSED"}

_INPUT = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")
_OUTPUT_FILE = re.compile(r"\{\{\$\.outputs\.parameters\['([^']+)'\]\.output_file\}\}")
_JSON_ESCAPE_1 = "{{$.json_escape[1]}}"
# Placeholders inside the task's constant inputs, hidden from kfp.local (runnable_locally):
# it refuses {{$.json_escape[1]}}, and resolves an input placeholder to a string where
# Vertex AI gives the typed value (the boot disk size, an integer). ``launch`` resolves both.
_TO_HIDE = re.compile(r"\{\{\$\.(json_escape\[1\]|inputs\.parameters\['[^']+'\])\}\}")
_HIDDEN = re.compile(r"\{\{tune2serve\.(json_escape\[1\]|inputs\.parameters\['[^']+'\])\}\}")
LOCAL_JSON_ESCAPE = "{{tune2serve.json_escape[1]}}"
_PIPELINE_GCP = {"{{$.pipeline_google_cloud_project_id}}": PROJECT_ENV,
                 "{{$.pipeline_google_cloud_location}}": LOCATION_ENV}
_PIPELINE_CONTEXT = r"\{\{\$\.pipeline_[a-z_]+\}\}"  # the run's project, location, persistent resource


def run_custom_job_launcher(gcp_resources: dsl.OutputPath(str)) -> None:  # type: ignore[valid-type]
    """GCPC's custom-job launcher task run here (pipelines/local_custom_job.py). A plain
    function, made a component only when a spec is made runnable: this module is also
    what the task imports at run time, where kfp's executor offers a reduced ``kfp.dsl``.

    Args:
        gcp_resources: the CustomJob's resource, as GCPC's launcher writes it.
    """
    from tune2serve.pipelines.local_custom_job import launch

    launch(gcp_resources)


def is_launcher(executor: Mapping[str, Any]) -> bool:
    """An executor that runs GCPC's custom-job launcher."""
    return LAUNCHER_MODULE in (executor.get("container") or {}).get("command", [])


def runnable_locally(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with each GCPC custom-job launcher executor replaced by
    ``run_custom_job_launcher`` (kfp.local runs it; see the module docstring). Its
    component keeps its inputs and outputs; only the defaults that name the pipeline's
    Google Cloud context (``{{$.pipeline_google_cloud_project_id}}``, ...), which
    kfp.local cannot resolve (it fails on them), become "": ``launch`` reads them from the run."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    labels = {label for label, e in executors.items() if is_launcher(e)}
    if not labels:
        return spec
    from tune2serve.components.step_component import step_component

    local = step_component(run_custom_job_launcher).component_spec.implementation.container
    out = {**spec, "deploymentSpec": {**spec["deploymentSpec"], "executors": dict(executors)},
           "components": dict(spec.get("components", {}))}
    for label in labels:
        container = executors[label]["container"]
        compiled = [*container["command"], *container.get("args", [])]
        out["deploymentSpec"]["executors"][label] = {"container": {
            "image": container.get("image", ""), "command": list(local.command), "args": list(local.args),
            "env": [{"name": LAUNCHER_ENV, "value": json.dumps(compiled)}],
        }}
    launchers = {name for name, c in spec.get("components", {}).items() if c.get("executorLabel") in labels}
    for name, component in spec.get("components", {}).items():
        if name in launchers:
            out["components"][name] = _without_pipeline_context(_hidden(component))
        elif "dag" in component:
            tasks = component["dag"].get("tasks", {})
            if any(t.get("componentRef", {}).get("name") in launchers for t in tasks.values()):
                out["components"][name] = {**component, "dag": {**component["dag"], "tasks": {
                    n: _hidden(t) if t.get("componentRef", {}).get("name") in launchers else t
                    for n, t in tasks.items()}}}
    return out


def _hidden(node: Any) -> Any:
    """``node`` with each string that is one placeholder of ``_TO_HIDE`` written as
    ``{{tune2serve.…}}``, which kfp.local leaves alone."""
    return _rewrite(node, _TO_HIDE, "{{tune2serve.")


def _as_compiled(node: Any) -> Any:
    """``node`` with each ``{{tune2serve.…}}`` placeholder written back as compiled."""
    return _rewrite(node, _HIDDEN, "{{$.")


def _rewrite(node: Any, pattern: re.Pattern[str], prefix: str) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite(v, pattern, prefix) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, pattern, prefix) for v in node]
    match = pattern.fullmatch(node) if isinstance(node, str) else None
    return f"{prefix}{match.group(1)}}}}}" if match else node


def _without_pipeline_context(component: dict[str, Any]) -> dict[str, Any]:
    """The component with its ``{{$.pipeline_*}}`` input defaults made ""."""
    params = component.get("inputDefinitions", {}).get("parameters", {})
    context = {n for n, p in params.items() if re.fullmatch(_PIPELINE_CONTEXT, str(p.get("defaultValue", "")))}
    if not context:
        return component
    return {**component, "inputDefinitions": {**component["inputDefinitions"], "parameters": {
        n: ({**p, "defaultValue": ""} if n in context else p) for n, p in params.items()}}}


def resolve_launcher_args(compiled: list[str], executor_input: Mapping[str, Any]) -> list[str]:
    """The launcher's command-line arguments (after ``-m MODULE``) as Vertex AI Pipelines
    resolves them for this task (see the module docstring, step 1)."""
    given = _as_compiled(executor_input.get("inputs", {}).get("parameterValues", {}))
    params = {name: _typed(value, given) for name, value in given.items()}
    params = {name: _pipeline_gcp(v) if isinstance(v, str) else v for name, v in params.items()}
    outputs = executor_input.get("outputs", {}).get("parameters", {})
    # the task's executor input as the backend gives it: nested channels resolved
    resolved_input = {**executor_input, "inputs": {**executor_input.get("inputs", {}), "parameterValues": params}}
    escaped = json.dumps(json.dumps(resolved_input))[1:-1]  # a JSON string's content, escaped once

    def value(name: str) -> str:
        v = params.get(name)  # an optional input given no value is null, as in test_dag
        return v if isinstance(v, str) else json.dumps(v)

    args = compiled[compiled.index(LAUNCHER_MODULE) + 1:]
    resolved = []
    for arg in args:
        arg = _OUTPUT_FILE.sub(lambda m: str(outputs[m.group(1)]["outputFile"]), arg)
        arg = _INPUT.sub(lambda m: value(m.group(1)), arg)
        resolved.append(arg.replace(_JSON_ESCAPE_1, escaped))
    return resolved


def _typed(value: Any, params: Mapping[str, Any]) -> Any:
    """``value`` with each string that is exactly one input placeholder replaced by that
    input's typed value (a channel KFP compiled into a nested constant)."""
    if isinstance(value, dict):
        return {k: _typed(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v, params) for v in value]
    match = _INPUT.fullmatch(value) if isinstance(value, str) else None
    if not (match and match.group(1) in params):
        return value
    typed = _typed(params[match.group(1)], params)
    # a protobuf Struct (the executor input) holds every number as a double
    return int(typed) if isinstance(typed, float) and typed.is_integer() else typed


def _pipeline_gcp(text: str) -> str:
    """The run's project / region for the ``{{$.pipeline_google_cloud_*}}`` placeholders,
    "" for the other ``{{$.pipeline_*}}`` ones (no persistent resource here), where
    kfp.local left them unresolved (where it made them "null", ``launch`` reads the run's)."""
    return re.sub(_PIPELINE_CONTEXT, lambda m: os.environ.get(_PIPELINE_GCP.get(m.group(0), ""), ""), text)


def launch(gcp_resources: str) -> None:
    """Runs the task: resolves the launcher's command line, creates the CustomJob with
    GCPC's payload handling and calls, writes ``gcp_resources`` as GCPC does, and polls
    the job until it ends (see the module docstring, step 2).

    Raises:
        OperationFailedError: the job ended FAILED or CANCELLED (its error said).
    """
    from google_cloud_pipeline_components.container.v1.custom_job import remote_runner
    from google_cloud_pipeline_components.container.v1.gcp_launcher.utils import json_util, parser_util

    from tune2serve.components.logs import get_logger, log_event
    from tune2serve.components.vertex.clients import job_service_client, target

    executor_input = json.loads(sys.argv[sys.argv.index("--executor_input") + 1])  # kfp.dsl.executor_main's
    args = resolve_launcher_args(json.loads(os.environ[LAUNCHER_ENV]), executor_input)
    _, parsed = parser_util.parse_default_args(args)
    project = parsed.project if parsed.project not in ("", "null") else os.environ.get(PROJECT_ENV, "")
    location = parsed.location if parsed.location not in ("", "null") else os.environ.get(LOCATION_ENV, "")
    if not (project and location):
        from tune2serve.components.errors import UsageError

        raise UsageError("the custom job runs in the pipeline run's project and region, which this kfp.local "
                         f"run was not given ({PROJECT_ENV}, {LOCATION_ENV}; run_pipeline takes them from the "
                         "run's project and region parameters)")
    vertex = target(project, location)
    client = job_service_client(vertex)
    job_spec = json_util.recursive_remove_empty(
        json.loads(remote_runner.insert_system_labels_into_payload(parsed.payload), strict=False))
    created = remote_runner.create_custom_job_with_client(client, vertex.parent, job_spec)
    _write_gcp_resources(gcp_resources, created.name, location)
    log = get_logger("custom_job")
    log_event(log, "custom_job.created", f"created {created.name}", custom_job=created.name)
    wait_for_custom_job(client, created.name)


def wait_for_custom_job(client: Any, name: str, poll: PollPolicy = JOB_POLL) -> Any:
    """Polls with GCPC's get call until the job ends; the job when it SUCCEEDED."""
    from google_cloud_pipeline_components.container.v1.custom_job import remote_runner

    from tune2serve.components.errors import OperationFailedError
    from tune2serve.components.logs import get_logger, log_event

    log, last = get_logger("custom_job"), None
    for interval in poll.intervals():
        job = remote_runner.get_custom_job_with_client(client, name)
        state = job.state.name
        if state != last:
            last = state
            log_event(log, "custom_job.state", f"{name}: {state}", custom_job=name, state=state)
        if state == "JOB_STATE_SUCCEEDED":
            return job
        if state in ENDED:
            raise OperationFailedError(f"custom job {name} ended {state}: {job.error.message or 'no error given'}",
                                       resource_name=name)
        time.sleep(interval)
    raise AssertionError("unreachable: a poll policy's intervals do not end")


def _write_gcp_resources(path: str, job_name: str, location: str) -> None:
    """The launcher's output, in its format (GcpResources JSON: the job's v1 URI)."""
    from google.protobuf import json_format
    from google_cloud_pipeline_components.proto.gcp_resources_pb2 import GcpResources

    resources = GcpResources()
    resource = resources.resources.add()
    resource.resource_type = "CustomJob"
    resource.resource_uri = f"https://{location}-aiplatform.googleapis.com/v1/{job_name}"
    with open(path, "w", encoding="utf-8") as f:
        f.write(json_format.MessageToJson(resources))


__all__ = ["LAUNCHER_MODULE", "is_launcher", "launch", "resolve_launcher_args", "run_custom_job_launcher",
           "runnable_locally", "wait_for_custom_job"]
