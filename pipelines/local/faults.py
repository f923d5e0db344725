"""Fault injection for the local stack, off by default.

Kinds (``tune2serve local fault KIND``, ``POST /_local/faults``, or ``inject_fault``):
- ``deploy-fails``: the next ``count`` (default 1) :deploy / deployModel operations
  fail with a Vertex-like error;
- ``kill-replica``: SIGKILL one replica of the target now (no automatic restart);
- ``http-503`` / ``http-429``: the next ``count`` (default 1) data-plane requests
  routed to the target are answered 503 UNAVAILABLE / 429 RESOURCE_EXHAUSTED;
- ``latency``: add ``ms`` milliseconds to the target's answers (``count`` requests,
  or every request when no count is given);
- ``clear``: remove every fault.
``target`` is a deployed model id or a Model resource name (whatever serves that model);
none means every deployed model.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("deploy-fails", "kill-replica", "http-503", "http-429", "latency", "clear")


@dataclass
class Fault:
    kind: str
    target: str | None = None
    count: int | None = None
    ms: int | None = None

    def applies_to(self, ids: set[str]) -> bool:
        return self.target is None or self.target in ids


class FaultBook:
    """The active faults of one Vertex server process (in memory: faults do not survive
    a restart, so a stack always comes back clean)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            if fault.kind == "clear":
                self._faults.clear()
            else:
                self._faults.append(fault)

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def _take(self, kinds: tuple[str, ...], ids: set[str], default_count: int | None) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.kind in kinds and f.applies_to(ids):
                    remaining = f.count if f.count is not None else default_count
                    if remaining is not None:
                        remaining -= 1
                        if remaining <= 0:
                            self._faults.remove(f)
                        else:
                            f.count = remaining
                    return f
        return None

    def take_deploy_failure(self, ids: set[str]) -> bool:
        return self._take(("deploy-fails",), ids, 1) is not None

    def take_http_error(self, ids: set[str]) -> int | None:
        f = self._take(("http-503", "http-429"), ids, 1)
        return None if f is None else int(f.kind[-3:])

    def take_latency_ms(self, ids: set[str]) -> int:
        f = self._take(("latency",), ids, None)
        return int(f.ms or 0) if f is not None else 0


def inject_fault(api_endpoint: str, kind: str, target: str | None = None, count: int | None = None,
                 ms: int | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Asks a running local Vertex server (``http://127.0.0.1:PORT``) to inject a fault;
    returns the server's answer (for kill-replica: the pid killed)."""
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
    body = json.dumps({k: v for k, v in {"kind": kind, "target": target, "count": count, "ms": ms}.items()
                       if v is not None}).encode()
    req = urllib.request.Request(f"{api_endpoint.rstrip('/')}/_local/faults", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return dict(json.loads(resp.read() or b"{}"))
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise RuntimeError(f"fault {kind} refused by {api_endpoint}: HTTP {e.code}: {detail}") from e
