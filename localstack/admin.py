"""Admin calls to a running local Vertex server that are not Vertex API (as faults.py's
``inject_fault`` is for faults): fire the stack's pipeline schedules now instead of at
their cron time, so a scheduled run is tested without waiting for 03:00.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def tick_schedules(api_endpoint: str, force: bool = False, timeout: float = 30.0) -> list[str]:
    """Asks the local Vertex server (``http://127.0.0.1:PORT``) to start its due schedules
    (``force``: every ACTIVE one, due or not), as Vertex's scheduler would at their times;
    returns the names of the pipeline jobs started (they run asynchronously)."""
    body = json.dumps({"force": force}).encode()
    req = urllib.request.Request(f"{api_endpoint.rstrip('/')}/_local/schedules:tick", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return [str(name) for name in json.loads(resp.read() or b"{}").get("started", [])]
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise RuntimeError(f"schedule tick refused by {api_endpoint}: HTTP {e.code}: {detail}") from e
