"""A loopback HTTP server around ``PipelineJobsService`` for the tests, standing in for
the local Vertex server's router until it routes /pipelineJobs and /schedules here (the
router line is one call: ``service.handle(method, path, query, body)``)."""

from __future__ import annotations

import json
import re
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tune2serve.localstack.api_errors import ApiError
from tune2serve.localstack.pipeline_jobs import PipelineJobsService
from tune2serve.localstack.tuning_jobs import TuningJobs


@dataclass
class PipelinesServer:
    url: str
    service: PipelineJobsService
    httpd: ThreadingHTTPServer
    project: str = "local-project"
    region: str = "us-central1"

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    tuning_jobs: dict[str, dict] = field(default_factory=dict)
    # name -> canonical status (e.g. "UNAVAILABLE") its GET answers instead of the job
    tuning_job_faults: dict[str, str] = field(default_factory=dict)

    def job_names(self) -> list[str]:
        with self.service.lock:
            return sorted(self.service.jobs)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.service.close()


_TUNING_JOB = re.compile(r"^/(v1|v1beta1)/(projects/[^/]+/locations/[^/]+/tuningJobs/[^/:]+)$")


def _tuning_job(tuning_jobs: TuningJobs, faults: dict[str, str], path: str) -> tuple[int, dict] | None:
    """GET of a tuning job the test put in ``tuning_jobs``, answered by the local stack's
    own tuning-jobs store (localstack/tuning_jobs.py), or the error ``faults`` names for it."""
    match = _TUNING_JOB.match(path)
    if not match:
        return None
    if match.group(2) in faults:
        error = ApiError(faults[match.group(2)], "injected by the test")
        return error.http_status, error.body()
    try:
        return 200, tuning_jobs.get(match.group(1), match.group(2), int_enums=True)
    except ApiError as e:
        return e.http_status, e.body()


def start(state_dir: Path, child_env: dict[str, str]) -> PipelinesServer:
    service = PipelineJobsService(state_dir, child_env)
    tuning_jobs = TuningJobs()
    tuning_job_faults: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                out = service.handle(self.command, parts.path, parse_qs(parts.query), body)
                if out is None and self.command == "GET":
                    out = _tuning_job(tuning_jobs, tuning_job_faults, parts.path)
            except Exception as e:  # a bug here must show as a 500 with its cause, not a dropped connection
                traceback.print_exc()
                out = 500, {"error": {"code": 500, "message": f"{type(e).__name__}: {e}", "status": "INTERNAL"}}
            status, payload = out if out is not None else (404, {"error": {"code": 404, "message": "no route", "status": "NOT_FOUND"}})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return PipelinesServer(f"http://127.0.0.1:{httpd.server_address[1]}", service, httpd,
                           tuning_jobs=tuning_jobs.jobs, tuning_job_faults=tuning_job_faults)
