"""The local Vertex server's ``customJobs``: create, get, list, cancel — and really run.

What the custom-job branch of the pipeline needs (an export worker on a named machine,
GCPC's ``create_custom_training_job_from_component``) and what GCPC's launcher calls:
``projects.locations.customJobs`` create / get / cancel. There is no long-running
operation: create answers the CustomJob at once in ``JOB_STATE_QUEUED``, and the job's
own ``state`` goes QUEUED → RUNNING → SUCCEEDED / FAILED (or CANCELLING → CANCELLED), as
the launcher polls it.

A job runs on this machine: the first worker pool's container command and arguments run
as one local process (the image is ignored; ``python3``/``python`` — first word or inside
an ``sh -c`` script — is this Python, found first on PATH), with the container's env plus
the stack's (GCS, Vertex, the local CA), in ``state_dir/custom_jobs/ID/`` with its log
there. What cannot be run that way is refused at create with a 400 naming the field:
several worker pools or replicas (no cluster here), a Python package spec, a container
without a command (the image's entrypoint is unknown without a container engine).

Framework-agnostic like ``pipeline_jobs``: the router calls ``CustomJobsService.handle``
for paths with ``/customJobs`` and gets ``(http_status, json_body)`` or None.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tune2serve.localstack import protos
from tune2serve.localstack.api_errors import ApiError, invalid, not_found, precondition
from tune2serve.localstack.state import new_id, now_rfc3339, write_json_atomic

_ROUTE = re.compile(r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/customJobs(?:/([^/:]+))?(?::([A-Za-z]+))?$")
TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}
STATE_FILE = "custom_jobs.json"


def check_custom_job(job: dict[str, Any]) -> list[str]:
    """What a CustomJob must hold to be accepted (Vertex's own checks: a display name, a
    worker pool with a machine type and a container or package), then what this machine
    can run. Returns the worker's command line."""
    if not job.get("displayName"):
        raise invalid("CustomJob.display_name is required.")
    pools = [p for p in (job.get("jobSpec") or {}).get("workerPoolSpecs", []) if p]
    if not pools:
        raise invalid("CustomJob.job_spec.worker_pool_specs must hold at least one worker pool.")
    for i, pool in enumerate(pools):
        if not (pool.get("machineSpec") or {}).get("machineType"):
            raise invalid(f"job_spec.worker_pool_specs[{i}].machine_spec.machine_type is required.")
    pool = pools[0]
    if len(pools) > 1 or int(pool.get("replicaCount") or 1) != 1:
        raise invalid("The local stack runs one replica of one worker pool: job_spec.worker_pool_specs must hold "
                      "one pool with replica_count 1.")
    if "pythonPackageSpec" in pool:
        raise invalid("job_spec.worker_pool_specs[0].python_package_spec is not run by the local stack; use a "
                      "container_spec with a command.")
    container = pool.get("containerSpec") or {}
    if not container.get("imageUri"):
        raise invalid("job_spec.worker_pool_specs[0].container_spec.image_uri is required.")
    if not container.get("command"):
        raise invalid("job_spec.worker_pool_specs[0].container_spec.command is required on the local stack: "
                      "without a container engine the image's entrypoint is unknown.")
    return [*container["command"], *container.get("args", [])]


def worker_command(argv: list[str]) -> list[str]:
    """The worker's command as this machine runs it: a leading ``python3``/``python`` is
    this Python (a shell script's finds it first on PATH, see ``CustomJobsService.env``)."""
    if argv and re.fullmatch(r"python(3(\.\d+)?)?", argv[0]):
        return [sys.executable, *argv[1:]]
    return list(argv)


class CustomJobsService:
    """``customJobs`` of the local Vertex server; state in ``state_dir/custom_jobs.json``,
    each job's folder and log in ``state_dir/custom_jobs/ID/``."""

    def __init__(self, state_dir: Path, stack_env: dict[str, str]) -> None:
        self.state_dir = Path(state_dir)
        self.stack_env = dict(stack_env)
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        path = self.state_dir / STATE_FILE
        self.jobs: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        for name, job in self.jobs.items():  # a server restart loses the processes it ran
            if job["state"] not in TERMINAL:
                self._end(name, "JOB_STATE_FAILED", 13, "The local Vertex server restarted while the job ran.")

    # ---------------------------------------------------------------------- routing

    def handle(self, method: str, path: str, query: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]] | None:
        """Answers one request, or None when the path is not a customJobs one."""
        match = _ROUTE.match(path.split("?", 1)[0])
        if not match:
            return None
        version, project, location, rid, verb = match.groups()
        parent = f"projects/{project}/locations/{location}"
        int_enums = "enum-encoding=int" in str(query.get("$alt", ""))
        try:
            match (method.upper(), rid is None, verb):
                case ("POST", True, None):
                    job = protos.to_dict(protos.parse(version, "CustomJob", body))
                    return 200, protos.render(version, "CustomJob", self.create(parent, job), int_enums)
                case ("GET", True, None):
                    with self.lock:
                        jobs = [copy.deepcopy(j) for n, j in sorted(self.jobs.items()) if n.startswith(parent + "/")]
                    items = [protos.render(version, "CustomJob", j, int_enums) for j in jobs]
                    return 200, {"customJobs": items} if items else {}
                case ("GET", False, None):
                    return 200, protos.render(version, "CustomJob", self.get(f"{parent}/customJobs/{rid}"), int_enums)
                case ("POST", False, "cancel"):
                    self.cancel(f"{parent}/customJobs/{rid}")
                    return 200, {}
        except ApiError as e:
            return e.http_status, e.body()
        return 404, ApiError("NOT_FOUND", f"No route for {method} {path}.").body()

    # ------------------------------------------------------------------------- jobs

    def create(self, parent: str, job: dict[str, Any]) -> dict[str, Any]:
        """Accepts a job (QUEUED) and starts running it; returns it as created."""
        argv = check_custom_job(job)
        name = f"{parent}/customJobs/{new_id()}"
        now = now_rfc3339()
        job.update(name=name, state="JOB_STATE_QUEUED", createTime=now, updateTime=now)
        with self.lock:
            self.jobs[name] = job
            self._save()
            created = copy.deepcopy(job)
        threading.Thread(target=self._run, args=(name, argv), name=f"custom-job-{name.rsplit('/', 1)[-1]}",
                         daemon=True).start()
        return created

    def get(self, name: str) -> dict[str, Any]:
        with self.lock:
            if name not in self.jobs:
                raise not_found(name)
            return copy.deepcopy(self.jobs[name])

    def cancel(self, name: str) -> None:
        """Vertex's cancel: the job goes CANCELLING, its process is stopped, then CANCELLED."""
        with self.lock:
            state = self.get(name)["state"]
            if state in TERMINAL:
                raise precondition(f"{name} is already in state {state}.")
            proc = self._running.get(name)
            if proc is None:
                self._end(name, "JOB_STATE_CANCELLED", 1, "Cancelled before it started.")
                return
            self._set(name, state="JOB_STATE_CANCELLING")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)

    def wait(self, name: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """Blocks until the job ends (tests and tooling); returns the job."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.get(name)["state"] in TERMINAL, timeout=timeout_s):
                raise TimeoutError(f"{name} did not finish within {timeout_s:.0f} s")
            return self.get(name)

    def close(self) -> None:
        """Stops every job in flight (the server's shutdown calls this)."""
        with self.lock:
            procs = list(self._running.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

    def job_dir(self, name: str) -> Path:
        return self.state_dir / "custom_jobs" / name.rsplit("/", 1)[-1]

    def env(self, job: dict[str, Any]) -> dict[str, str]:
        """The worker's environment: this process's, the stack's, the container's own
        variables, and the ones Vertex AI sets in a custom job's containers; this Python's
        folder first on PATH, so ``python3`` in a script is this Python."""
        container = job["jobSpec"]["workerPoolSpecs"][0].get("containerSpec", {})
        env = {**os.environ, **self.stack_env, **{e["name"]: e.get("value", "") for e in container.get("env", [])}}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["CLOUD_ML_JOB_ID"] = job["name"].rsplit("/", 1)[-1]
        output = (job["jobSpec"].get("baseOutputDirectory") or {}).get("outputUriPrefix")
        if output:
            env.update(AIP_MODEL_DIR=f"{output}/model", AIP_CHECKPOINT_DIR=f"{output}/checkpoints",
                       AIP_TENSORBOARD_LOG_DIR=f"{output}/logs")
        return env

    # --------------------------------------------------------------------- internals

    def _run(self, name: str, argv: list[str]) -> None:
        folder = self.job_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "log.txt"
        try:
            with self.lock:
                job = self.jobs[name]
                if job["state"] != "JOB_STATE_QUEUED":
                    return
                with open(log, "wb") as out:  # its own session: a cancel stops what it starts too
                    self._running[name] = subprocess.Popen(worker_command(argv), stdout=out, stderr=subprocess.STDOUT,
                                                           stdin=subprocess.DEVNULL, env=self.env(job), cwd=folder,
                                                           start_new_session=True)
                self._set(name, state="JOB_STATE_RUNNING", startTime=now_rfc3339())
            code = self._running[name].wait()
        except OSError as e:  # the command could not start
            self._end(name, "JOB_STATE_FAILED", 3, f"The replica workerpool0-0 could not start: {e} (log: {log})")
            return
        with self.lock:
            del self._running[name]
            if self.jobs[name]["state"] == "JOB_STATE_CANCELLING":
                self._end(name, "JOB_STATE_CANCELLED", 1, "Cancelled by the user.")
            elif code == 0:
                self._end(name, "JOB_STATE_SUCCEEDED")
            else:
                self._end(name, "JOB_STATE_FAILED", 3,
                          f"The replica workerpool0-0 exited with a non-zero status of {code}. (log: {log})")

    def _set(self, name: str, **fields: Any) -> None:
        with self.lock:
            self.jobs[name].update(fields, updateTime=now_rfc3339())
            self._save()

    def _end(self, name: str, state: str, code: int = 0, message: str = "") -> None:
        fields: dict[str, Any] = {"state": state, "endTime": now_rfc3339()}
        if state != "JOB_STATE_SUCCEEDED":
            fields["error"] = {"code": code, "message": message}
        self._set(name, **fields)

    def _save(self) -> None:
        with self.lock:
            write_json_atomic(self.state_dir / STATE_FILE, self.jobs)
            self._changed.notify_all()


__all__ = ["CustomJobsService", "check_custom_job", "worker_command"]
