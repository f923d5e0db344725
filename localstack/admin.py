"""Admin calls to a running local Vertex server that are not Vertex API (as faults.py's
``inject_fault`` is for faults): fire the stack's pipeline schedules now instead of at
their cron time, so a scheduled run is tested without waiting for 03:00; record a tuning
job for ``GetTuningJob`` to answer, as the tuning-job trigger reads it (the stack runs no
tuning).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def tick_schedules(api_endpoint: str, force: bool = False, timeout: float = 30.0) -> list[str]:
    """Asks the local Vertex server (``http://127.0.0.1:PORT``) to start its due schedules
    (``force``: every ACTIVE one, due or not), as Vertex's scheduler would at their times;
    returns the names of the pipeline jobs started (they run asynchronously)."""
    answer = _post(api_endpoint, "/_local/schedules:tick", {"force": force}, "schedule tick", timeout)
    return [str(name) for name in answer.get("started", [])]


def record_tuning_job(api_endpoint: str, name: str, state: str, output_uri: str | None = None,
                      timeout: float = 30.0) -> dict[str, Any]:
    """Records the tuning job ``name`` (projects/P/locations/L/tuningJobs/ID) on the local
    Vertex server with ``state`` (``JOB_STATE_SUCCEEDED``, ...) and ``output_uri``, as a
    managed-tuning job would report them; returns the stored TuningJob JSON."""
    body: dict[str, Any] = {"name": name, "state": state}
    if output_uri is not None:
        body["outputUri"] = output_uri
    return _post(api_endpoint, "/_local/tuningJobs", body, "tuning job record", timeout)


def _post(api_endpoint: str, path: str, body: dict[str, Any], what: str, timeout: float) -> dict[str, Any]:
    """POSTs ``body`` as JSON to an admin route; its JSON answer, or RuntimeError with the refusal."""
    req = urllib.request.Request(f"{api_endpoint.rstrip('/')}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return dict(json.loads(resp.read() or b"{}"))
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise RuntimeError(f"{what} refused by {api_endpoint}: HTTP {e.code}: {detail}") from e
