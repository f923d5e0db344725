"""Tuning jobs on the local Vertex server: ``GenAiTuningService.GetTuningJob`` over jobs
recorded by an admin call, as a finished (or running) managed-tuning job reads in the cloud.

The local stack runs no tuning. A test, or an operator trying the trigger, records the
job it wants Vertex to report — ``POST /_local/tuningJobs`` with a ``TuningJob`` body
(``name``, ``state``, ``outputUri``: checked by the SDK's own v1beta1 type, so a field
the real resource lacks is refused) — and ``GET /v1beta1/projects/P/locations/L/tuningJobs/ID``
answers it (404 NOT_FOUND for a job never recorded). Jobs live in the server's memory.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from tune2serve.localstack import protos
from tune2serve.localstack.api_errors import invalid, not_found

_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/tuningJobs/[^/:]+")


class TuningJobs:
    """The recorded tuning jobs by resource name (``jobs`` is their stored v1beta1 JSON)."""

    def __init__(self, jobs: dict[str, dict[str, Any]] | None = None) -> None:
        self.jobs: dict[str, dict[str, Any]] = {} if jobs is None else jobs
        self.lock = threading.Lock()

    def record(self, body: bytes | str | dict[str, Any]) -> dict[str, Any]:
        """Stores a ``TuningJob`` (replacing one of the same name); 400 when the body is not
        one or names no tuning job."""
        job = protos.to_dict(protos.parse("v1beta1", "TuningJob", body))
        if not _NAME.fullmatch(str(job.get("name", ""))):
            raise invalid("A recorded tuning job needs a name projects/P/locations/L/tuningJobs/ID.")
        with self.lock:
            self.jobs[job["name"]] = job
        return job

    def get(self, version: str, name: str, int_enums: bool) -> dict[str, Any]:
        """The job as ``version``'s ``TuningJob`` type renders it; 404 when never recorded."""
        with self.lock:
            job = self.jobs.get(name)
        if job is None:
            raise not_found(name)
        return protos.render(version, "TuningJob", job, int_enums)
