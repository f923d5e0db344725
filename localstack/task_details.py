"""``jobDetail.taskDetails`` of a local pipeline job, shaped like Vertex's
``PipelineTaskDetail``: the Vertex UI draws a run's graph and task states from them, and
``submit --wait`` can follow a run by them.

One task per step the run reached, after a root task named after the pipeline (task id 1,
every step's ``parentTaskId``): ``taskName``, ``state`` (RUNNING → SUCCEEDED | FAILED),
``startTime``/``endTime``, ``execution`` (``state``; output parameters in its ``metadata``
as ``output:NAME``, as Vertex records them), ``outputs`` (each output artifact as an
``ArtifactList``: ``schemaTitle`` from the spec, the ``uri`` kfp.local wrote it to, its
``metadata``) and, for a failed step, ``error`` (``google.rpc.Status``).

While a run goes on the states come from the run's folder as kfp.local fills it (a task
folder appears when its process starts, ``executor_output.json`` when it succeeds);
when the run has ended, from what the runner found (``tasks.json``, written by the job's
child process with wall-clock times: ``final_tasks``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

TASKS = "tasks.json"  # what the runner found, per step (the child writes it at the end)
EXECUTOR_OUTPUT = "executor_output.json"  # kfp.local's file in a task folder once it succeeded
_STATES = {"SUCCESS": "SUCCEEDED", "FAILURE": "FAILED", "RUNNING": "RUNNING"}
_EXECUTION_STATES = {"SUCCEEDED": "COMPLETE", "FAILED": "FAILED", "RUNNING": "RUNNING",
                     "CANCELLED": "CANCELLED"}


def rfc3339(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def final_tasks(steps: list[Any], monotonic_now: float, wall_now: float) -> list[dict[str, Any]]:
    """The runner's steps (``kfp_local.StepRun``: monotonic times) as wall-clock records
    for ``TASKS``; ``monotonic_now``/``wall_now`` are read together, once."""
    def wall(t: float) -> str:
        return rfc3339(wall_now - (monotonic_now - t))

    return [{"task": s.task, "state": _STATES.get(s.status, "FAILED"), "startTime": wall(s.started),
             "endTime": wall(s.finished), **({"message": s.message} if s.message else {})} for s in steps]


def _task_folders(outputs: Path) -> dict[str, Path]:
    """Task name → its folder under the run's kfp.local folder (a ParallelFor's
    iterations are ``<loop>-iteration-N/<task>``: the first one stands for the task)."""
    found: dict[str, Path] = {}
    runs = [p for p in outputs.iterdir() if p.is_dir()] if outputs.is_dir() else []
    for run in runs:
        for child in sorted(run.iterdir(), key=lambda p: p.name):
            if not child.is_dir():
                continue
            inner = [c for c in child.iterdir() if c.is_dir()] if "-iteration-" in child.name else [child]
            for folder in inner:
                found.setdefault(folder.name, folder)
    return found


def _outputs(spec: dict[str, Any], task: str, folder: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(execution metadata, outputs) of a task from its executor output and the spec."""
    written: dict[str, Any] = {}
    if folder is not None and (folder / EXECUTOR_OUTPUT).is_file():
        try:
            written = json.loads((folder / EXECUTOR_OUTPUT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            written = {}
    metadata = {f"output:{k}": v for k, v in (written.get("parameterValues") or {}).items()}
    declared = spec.get("components", {}).get(f"comp-{task}", {}).get("outputDefinitions", {}).get("artifacts", {})
    outputs: dict[str, Any] = {}
    for name, definition in declared.items():
        artifact_type = definition.get("artifactType", {})
        given = ((written.get("artifacts") or {}).get(name) or {}).get("artifacts") or [{}]
        uri = given[0].get("uri") or (str(folder / name) if folder is not None and (folder / name).exists() else "")
        if not uri and not given[0]:
            continue  # not written (yet)
        artifact = {"displayName": name, "uri": uri, "schemaTitle": artifact_type.get("schemaTitle", ""),
                    "schemaVersion": artifact_type.get("schemaVersion", ""), "metadata": given[0].get("metadata", {})}
        outputs[name] = {"artifacts": [artifact]}
    return metadata, outputs


def task_details(job: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """``jobDetail.taskDetails`` of ``job``, whose run folder is ``run_dir``."""
    spec = job.get("pipelineSpec") or {}
    folders = _task_folders(run_dir / "outputs")
    try:
        final = json.loads((run_dir / TASKS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        final = None
    ended = job.get("state") in ("PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED")
    cancelled = job.get("state") == "PIPELINE_STATE_CANCELLED"
    records = final if final is not None else [_live(task, folder, ended, cancelled)
                                               for task, folder in folders.items()]
    if not records and job.get("state") in (None, "PIPELINE_STATE_QUEUED", "PIPELINE_STATE_PENDING"):
        return []
    root_state = {"PIPELINE_STATE_SUCCEEDED": "SUCCEEDED", "PIPELINE_STATE_FAILED": "FAILED",
                  "PIPELINE_STATE_CANCELLED": "CANCELLED"}.get(job.get("state", ""), "RUNNING")
    root: dict[str, Any] = {"taskId": "1", "taskName": spec.get("pipelineInfo", {}).get("name", "pipeline"),
                            "state": root_state, "execution": {"state": _EXECUTION_STATES[root_state]}}
    for key in ("createTime", "startTime", "endTime"):
        if job.get(key):
            root[key] = job[key]
    details = [root]
    for number, record in enumerate(records, start=2):
        task = record["task"]
        state = record["state"]
        metadata, outputs = _outputs(spec, task, folders.get(task))
        detail: dict[str, Any] = {"taskId": str(number), "parentTaskId": "1", "taskName": task,
                                  "createTime": record["startTime"], "startTime": record["startTime"],
                                  "state": state, "execution": {"displayName": task,
                                                                "state": _EXECUTION_STATES[state]}}
        if metadata:
            detail["execution"]["metadata"] = metadata
        if outputs:
            detail["outputs"] = outputs
        if state != "RUNNING" and record.get("endTime"):
            detail["endTime"] = record["endTime"]
        if state == "FAILED":
            detail["error"] = {"code": 9, "message": record.get("message") or f"The task {task} failed."}
        details.append(detail)
    return details


def _live(task: str, folder: Path, ended: bool, cancelled: bool) -> dict[str, Any]:
    """A task's record from its folder alone (the run is going on, or it was stopped
    before the runner wrote ``TASKS``: cancelled, or its process died)."""
    started = folder.stat().st_ctime
    done = folder / EXECUTOR_OUTPUT
    if done.is_file():
        return {"task": task, "state": "SUCCEEDED", "startTime": rfc3339(started),
                "endTime": rfc3339(done.stat().st_mtime)}
    if cancelled:
        return {"task": task, "state": "CANCELLED", "startTime": rfc3339(started), "endTime": rfc3339(time.time())}
    if ended:
        return {"task": task, "state": "FAILED", "startTime": rfc3339(started), "endTime": rfc3339(time.time())}
    return {"task": task, "state": "RUNNING", "startTime": rfc3339(started)}
