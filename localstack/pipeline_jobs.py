"""The local Vertex server's Pipelines surface: ``pipelineJobs`` and ``schedules``.

Framework-agnostic: the server's router calls ``PipelineJobsService.handle(method, path,
query, body)`` first for paths with ``/pipelineJobs`` or ``/schedules`` and gets
``(http_status, json_body)`` back, or None when the path is not ours. Requests are parsed
strictly with the SDK's own types (``protos.parse``), as the cloud does, and resources
are rendered through them.

An accepted pipeline job is really run: one worker thread takes jobs in order (QUEUED →
RUNNING → SUCCEEDED/FAILED/CANCELLED) and runs each in a child process (``python -m
tune2serve.localstack.pipeline_jobs RUN_DIR``) with the project's one kfp.local runner
(``pipelines/kfp_local.py``), its environment carrying the stack's settings so the
components reach the same local stack. The child writes what the runner found
(``result.json``: which task failed, where in the DAG, and its error) for the job's
error message. kfp.local writes outputs under a local folder (the job's run folder),
not under the gs:// pipeline root. Schedules (``nextRunTime``, ``tick()``) are the
``SchedulesMixin`` part of the service, in localstack/schedules.py.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tune2serve.localstack import protos
from tune2serve.localstack.api_errors import ApiError, invalid, not_found, precondition
from tune2serve.localstack.schedules import SchedulesMixin, query_value
from tune2serve.localstack.state import new_id, now_rfc3339, write_json_atomic
from tune2serve.localstack.task_details import TASKS, final_tasks, task_details

_ROUTE = re.compile(r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/(pipelineJobs|schedules)"
                    r"(?:/([^/:]+))?(?::([A-Za-z]+))?$")
_JOB_ID = re.compile(r"^[a-z][-a-z0-9]{0,127}$")
TERMINAL = {"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"}
RESULT = "result.json"  # what the child found, for the job's error message


def _matches(resource: dict[str, Any], text: str | None) -> bool:
    """The filter subset the SDK sends: ``field="value"`` terms joined by AND."""
    if not text:
        return True
    for term in re.split(r"\s+AND\s+", text.strip()):
        match = re.fullmatch(r'\s*([a-zA-Z_.]+)\s*=\s*"?([^"]*)"?\s*', term)
        if not match:
            raise invalid(f"Unsupported filter term {term!r}; use field=\"value\" terms joined by AND.")
        field, want = match.groups()
        key = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), field)
        if key.startswith("labels."):
            have = resource.get("labels", {}).get(key[len("labels."):])
        else:
            have = resource.get(key)
        if str(have) != want:
            return False
    return True


def check_pipeline_job(job: dict[str, Any]) -> None:
    """What Vertex checks before it accepts a run: a spec, a gs:// root, and parameters
    that the spec declares, required ones present, each value of its declared type."""
    spec = job.get("pipelineSpec") or {}
    if not spec.get("root"):
        raise invalid("PipelineJob.pipeline_spec is required and must hold a root component.")
    runtime = job.get("runtimeConfig") or {}
    root = runtime.get("gcsOutputDirectory", "")
    if not root.startswith("gs://"):
        raise invalid(f"runtime_config.gcs_output_directory must be a gs:// URI, got {root!r}.")
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    given = runtime.get("parameterValues", {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise invalid(f"The pipeline parameter(s) {unknown} are not defined in the pipeline spec.")
    missing = sorted(n for n, d in declared.items()
                     if n not in given and "defaultValue" not in d and not d.get("isOptional"))
    if missing:
        raise invalid(f"The pipeline parameter(s) {missing} are required but have no value.")
    for name in sorted(given):
        problem = parameter_type_problem(declared[name].get("parameterType", ""), given[name])
        if problem:
            raise invalid(f"The value of pipeline parameter '{name}' does not match its type in the pipeline "
                          f"spec: {problem}.")


# parameterType → (what a value of it is, the JSON kinds that are one)
_PARAMETER_KINDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "NUMBER_INTEGER": ("an integer", (int, float)),
    "NUMBER_DOUBLE": ("a number", (int, float)),
    "STRING": ("a string", (str,)),
    "BOOLEAN": ("a boolean", (bool,)),
    "LIST": ("a list", (list,)),
    "STRUCT": ("an object", (dict,)),
}


def parameter_type_problem(parameter_type: str, value: Any) -> str | None:
    """Why ``value`` (a protobuf Value as JSON: numbers are doubles) is not of the
    spec's ``parameter_type``, or None. Checked at create, as Vertex checks it: a string
    for an integer parameter is refused then, not deep inside a step later."""
    expected = _PARAMETER_KINDS.get(parameter_type)
    if expected is None or value is None:
        return None
    what, kinds = expected
    is_bool = isinstance(value, bool)
    if (is_bool and bool not in kinds) or not isinstance(value, kinds):
        return f"{parameter_type} needs {what}, got {json.dumps(value)[:80]}"
    if parameter_type == "NUMBER_INTEGER" and not float(value).is_integer():
        return f"NUMBER_INTEGER needs {what}, got {json.dumps(value)[:80]}"
    return None


class PipelineJobsService(SchedulesMixin):
    """``pipelineJobs`` and ``schedules`` of the local Vertex server. State lives in
    ``state_dir`` (``pipeline_jobs.json``, ``schedules.json``, ``pipeline_runs/ID/``)."""

    def __init__(self, state_dir: Path, api_endpoint_env: dict[str, str]) -> None:
        self.state_dir = Path(state_dir)
        self.env = dict(api_endpoint_env)
        self.lock = threading.RLock()
        self.jobs: dict[str, dict[str, Any]] = self._load("pipeline_jobs.json")
        self.schedules: dict[str, dict[str, Any]] = self._load("schedules.json")
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._changed = threading.Condition(self.lock)
        self._worker: threading.Thread | None = None
        for name, job in self.jobs.items():  # a server restart loses what was in flight
            if job["state"] not in TERMINAL:
                self._finish(name, "PIPELINE_STATE_FAILED", "The local Vertex server restarted during the run.")

    # ------------------------------------------------------------------ persistence

    def _load(self, file: str) -> dict[str, dict[str, Any]]:
        path = self.state_dir / file
        return json.loads(path.read_text()) if path.is_file() else {}

    def _save(self) -> None:
        with self.lock:
            write_json_atomic(self.state_dir / "pipeline_jobs.json", self.jobs)
            write_json_atomic(self.state_dir / "schedules.json", self.schedules)
            self._changed.notify_all()

    # ---------------------------------------------------------------------- routing

    def handle(self, method: str, path: str, query: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]] | None:
        """Answers one request, or None when the path is not a pipelineJobs/schedules one."""
        match = _ROUTE.match(path.split("?", 1)[0])
        if not match:
            return None
        version, project, location, collection, rid, verb = match.groups()
        parent = f"projects/{project}/locations/{location}"
        int_enums = "enum-encoding=int" in (query_value(query, "$alt") or "")
        method = method.upper()
        try:
            if collection == "pipelineJobs":
                out = self._jobs_route(method, version, parent, rid, verb, query, body)
            else:
                out = self._schedules_route(method, version, parent, rid, verb, query, body)
        except ApiError as e:
            return e.http_status, e.body()
        if out is None:
            return 404, ApiError("NOT_FOUND", f"No route for {method} {path}.").body()
        type_name, payload = out
        if type_name in ("PipelineJob", "Schedule"):
            return 200, protos.render(version, type_name, payload, int_enums)
        if type_name.startswith("List"):
            key, item_type = ("pipelineJobs", "PipelineJob") if "Pipeline" in type_name else ("schedules", "Schedule")
            items = [protos.render(version, item_type, r, int_enums) for r in payload]
            return 200, {key: items} if items else {}
        return 200, payload

    def _listed(self, store: dict[str, dict[str, Any]], parent: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(r) for n, r in sorted(store.items())
                    if n.startswith(parent + "/") and _matches(r, query_value(query, "filter"))]

    def _deleted(self, store: dict[str, dict[str, Any]], name: str, parent: str) -> tuple[str, Any]:
        with self.lock:
            if name not in store:
                raise not_found(name)
            del store[name]
            self._save()
        return "Operation", self._done_operation(parent)

    def _jobs_route(self, method: str, version: str, parent: str, rid: str | None, verb: str | None,
                    query: dict[str, Any], body: bytes) -> tuple[str, Any] | None:
        name = f"{parent}/pipelineJobs/{rid}"
        match (method, rid is None, verb):
            case ("POST", True, None):
                job = protos.to_dict(protos.parse(version, "PipelineJob", body))
                return "PipelineJob", self.create_job(parent, job, query_value(query, "pipelineJobId"))
            case ("GET", True, None):
                return "ListPipelineJobsResponse", [self.with_details(j) for j in self._listed(self.jobs, parent, query)]
            case ("GET", False, None):
                return "PipelineJob", self.with_details(self.get_job(name))
            case ("DELETE", False, None):
                if self.get_job(name)["state"] not in TERMINAL:
                    raise precondition(f"{name} is still running; cancel it first.")
                return self._deleted(self.jobs, name, parent)
            case ("POST", False, "cancel"):
                self.cancel_job(name)
                return "Empty", {}
        return None

    def _done_operation(self, parent: str) -> dict[str, Any]:
        """Deletes finish at once; a done operation means the SDK never polls."""
        return {"name": f"{parent}/operations/{new_id()}", "done": True,
                "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}}

    # ----------------------------------------------------------------- pipeline jobs

    check_job = staticmethod(check_pipeline_job)

    def active_runs(self, schedule: str) -> int:
        """How many runs of ``schedule`` have not ended (its max_concurrent_run_count)."""
        with self.lock:
            return sum(1 for j in self.jobs.values() if j.get("scheduleName") == schedule and j["state"] not in TERMINAL)

    def create_job(self, parent: str, job: dict[str, Any], job_id: str | None, schedule: str | None = None) -> dict[str, Any]:
        check_pipeline_job(job)
        if job_id is None:
            pipeline = job["pipelineSpec"].get("pipelineInfo", {}).get("name", "pipeline")
            job_id = f"{re.sub('[^-0-9a-z]+', '-', pipeline.lower()).strip('-')}-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S%f}"
        if not _JOB_ID.match(job_id):
            raise invalid(f"pipeline_job_id {job_id!r} must match [a-z][-a-z0-9]{{0,127}}.")
        name = f"{parent}/pipelineJobs/{job_id}"
        with self.lock:
            if name in self.jobs:
                raise ApiError("ALREADY_EXISTS", f"PipelineJob {name} already exists.")
            now = now_rfc3339()
            job.update(name=name, state="PIPELINE_STATE_QUEUED", createTime=now, updateTime=now)
            job["displayName"] = job.get("displayName") or job_id
            if schedule:
                job["scheduleName"] = schedule
            self.jobs[name] = job
            self._save()
            self._ensure_worker()
            created = copy.deepcopy(job)  # before the worker can start changing it
        self._queue.put(name)
        return created

    def get_job(self, name: str) -> dict[str, Any]:
        with self.lock:
            if name not in self.jobs:
                raise not_found(name)
            return copy.deepcopy(self.jobs[name])

    def with_details(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job as the API shows it: with ``jobDetail.taskDetails`` (localstack/task_details.py)."""
        details = task_details(job, self.state_dir / "pipeline_runs" / job["name"].rsplit("/", 1)[-1])
        return {**job, "jobDetail": {"taskDetails": details}} if details else job

    def cancel_job(self, name: str) -> None:
        with self.lock:
            state = self.get_job(name)["state"]
            if state in TERMINAL:
                raise precondition(f"{name} is already in state {state}.")
            proc = self._running.get(name)
            if proc is None:
                self._finish(name, "PIPELINE_STATE_CANCELLED", "Cancelled before it started.")
                return
            self.jobs[name]["state"] = "PIPELINE_STATE_CANCELLING"
            self._save()
        self._stop(proc)

    def _finish(self, name: str, state: str, message: str | None = None) -> None:
        with self.lock:
            job = self.jobs[name]
            job.update(state=state, endTime=now_rfc3339(), updateTime=now_rfc3339())
            if message and state != "PIPELINE_STATE_SUCCEEDED":
                job["error"] = {"code": 1 if state == "PIPELINE_STATE_CANCELLED" else 9, "message": message}
            self._save()

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="local-pipeline-jobs", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while (name := self._queue.get()) is not None:
            try:
                self._run_one(name)
            except Exception as e:  # the worker must outlive one bad run
                with self.lock:
                    self._running.pop(name, None)
                    if name in self.jobs and self.jobs[name]["state"] not in TERMINAL:
                        self._finish(name, "PIPELINE_STATE_FAILED", f"The local runner failed: {type(e).__name__}: {e}")

    def _run_one(self, name: str) -> None:
        with self.lock:
            job = self.jobs.get(name)
            if job is None or job["state"] != "PIPELINE_STATE_QUEUED":
                return
            job.update(state="PIPELINE_STATE_RUNNING", startTime=now_rfc3339(), updateTime=now_rfc3339())
            run_dir = self.state_dir / "pipeline_runs" / name.rsplit("/", 1)[-1]
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / "job.json", job)
            with open(run_dir / "log.txt", "wb") as log:  # the child keeps its own descriptor
                # Its own session, so a cancel stops the kfp.local tasks it started too.
                self._running[name] = subprocess.Popen(
                    [sys.executable, "-m", "tune2serve.localstack.pipeline_jobs", str(run_dir)],
                    stdout=log, stderr=subprocess.STDOUT, env=self._child_env(), cwd=run_dir,
                    start_new_session=True)
            self._save()
        code = self._running[name].wait()
        with self.lock:
            del self._running[name]
            if self.jobs[name]["state"] == "PIPELINE_STATE_CANCELLING":
                self._finish(name, "PIPELINE_STATE_CANCELLED", "Cancelled by the user.")
            elif code == 0:
                self._finish(name, "PIPELINE_STATE_SUCCEEDED")
            else:
                self._finish(name, "PIPELINE_STATE_FAILED", _failure_message(run_dir, code))

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        """Stops a run and every process it started (its own process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def wait(self, name: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """Blocks until the job ends (tests and tooling); returns the job."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.get_job(name)["state"] in TERMINAL, timeout=timeout_s):
                raise TimeoutError(f"{name} did not finish within {timeout_s:.0f} s")
            return self.get_job(name)

    def close(self) -> None:
        """Stops the worker and any run in flight (the server's shutdown calls this)."""
        with self.lock:
            procs = list(self._running.values())
        for proc in procs:
            self._stop(proc)
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=10)


def _failure_message(run_dir: Path, code: int) -> str:
    """Vertex-like: which task failed and the error it raised, then where the log is."""
    log = run_dir / "log.txt"
    try:
        found = json.loads((run_dir / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = {}
    chain = " inside ".join(f"'{t}'" for t in found.get("failed_tasks") or [])
    head = f"The DAG failed because some tasks failed: {chain}." if chain else f"The run exited with {code}."
    cause = f" {found['message']}" if found.get("message") else ""
    return f"{head}{cause} (log: {log})"


def run_pipeline_job(run_dir: Path) -> int:
    """Runs ``run_dir/job.json`` with the kfp.local runner (child-process entry point);
    writes ``run_dir/result.json``; 0 when the run succeeded."""
    from tune2serve.pipelines.kfp_local import print_progress, run_pipeline
    from tune2serve.pipelines.local_custom_job import LOCATION_ENV, PROJECT_ENV

    job = json.loads((run_dir / "job.json").read_text())
    _, project, _, location = job["name"].split("/")[:4]  # the job's own, as Vertex resolves them for its tasks
    # one line per task as it starts and ends, among the steps' output in the job's log
    run = run_pipeline(job["pipelineSpec"], job.get("runtimeConfig", {}).get("parameterValues", {}),
                       pipeline_root=run_dir / "outputs", env={PROJECT_ENV: project, LOCATION_ENV: location},
                       echo=sys.stdout, progress=print_progress(sys.stdout))
    write_json_atomic(run_dir / TASKS, final_tasks(run.steps, time.monotonic(), time.time()))
    failed = run.failed_step
    write_json_atomic(run_dir / RESULT, {"succeeded": run.succeeded, "failed_tasks": run.failed_tasks,
                                         "message": failed.message if failed else None})
    return 0 if run.succeeded else 1


if __name__ == "__main__":
    sys.exit(run_pipeline_job(Path(sys.argv[1])))
