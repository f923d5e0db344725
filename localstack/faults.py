"""Fault injection for the local stack, off by default.

Kinds (``tune2serve local fault KIND``, ``POST /_local/faults``, or ``inject_fault``);
``KIND_HELP`` below is the one description of each, printed by ``local fault --help``.
``target`` is a deployed model id or a Model resource name (whatever serves that model);
none means every deployed model. Faults live in the Vertex server's memory: a restarted
stack comes back clean.
"""

from __future__ import annotations

import functools
import json
import threading
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from tune2serve.components import ranges, user_input  # stdlib-only at import, as this module must stay

KIND_HELP: dict[str, str] = {
    "deploy-fails": "the next --count (default 1) :deploy / deployModel operations for the target fail",
    "undeploy-fails": "the next --count (default 1) undeployModel operations for the target fail "
                      "(the model stays deployed)",
    "kill-replica": "SIGKILL one replica of the target now (not restarted until `local up`)",
    "http-503": "the next --count (default 1) data-plane requests routed to the target answer 503 UNAVAILABLE; "
                "with --match REGEX only those whose body matches REGEX (the rest are served: a canary that "
                "passes the probe and fails some real users)",
    "http-429": "the next --count (default 1) data-plane requests routed to the target answer 429 "
                "(--match as for http-503)",
    "latency": "add --ms milliseconds to the target's answers (--count requests, or all until cleared)",
    "routing-skew": "route --percent N% of the endpoint's requests to the target deployed model, whatever "
                    "the trafficSplit says, until cleared (needs --target and --percent)",
    "control-429": "the next --count (default 1) control-plane API calls (whose path contains --target, when "
                   "given, e.g. :deploy) answer 429 RESOURCE_EXHAUSTED, quota exceeded",
    "clear": "remove every fault",
}
KINDS = tuple(KIND_HELP)


@functools.lru_cache(maxsize=64)
def _pattern(text: str) -> user_input.Pattern:
    """A fault's ``--match``, compiled once (``BadPattern`` when it cannot be)."""
    return user_input.compile_pattern(text)


@dataclass
class Fault:
    kind: str
    target: str | None = None
    count: int | None = None
    ms: int | None = None
    percent: int | None = None
    match: str | None = None

    def applies_to(self, ids: set[str], body: bytes | None = None) -> bool:
        if self.target is not None and self.target not in ids:
            return False
        if self.match is not None:
            if body is None:
                return False
            try:  # bounded: a backtracking --match must not stall the data plane
                return _pattern(self.match).search(body.decode("utf-8", errors="replace"))
            except user_input.PatternTimeout:
                return False
        return True

    def problem(self) -> str:
        """Why this fault cannot be injected ("" when it can)."""
        if self.kind not in KINDS:
            return f"unknown fault kind {self.kind!r}; expected one of {', '.join(KINDS)}"
        if self.kind == "routing-skew" and (not self.target or self.percent is None):
            return "routing-skew needs --target (a deployed model id or Model name) and --percent between 0 and 100"
        if self.match is not None:
            if self.kind not in ("http-503", "http-429"):
                return f"--match applies to http-503 and http-429 only, not {self.kind}"
            try:
                _pattern(self.match) if isinstance(self.match, str) else user_input.compile_pattern(self.match)
            except user_input.BadPattern as e:
                return f"--match {e}"
        for spec, value in ((ranges.FAULT_COUNT, self.count), (ranges.FAULT_MS, self.ms),
                            (ranges.FAULT_PERCENT, self.percent)):
            if value is not None and spec.problem(value):
                return f"{spec.flag}: {spec.problem(value)}"
        return ""


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

    def _take(self, kinds: tuple[str, ...], ids: set[str], default_count: int | None,
              body: bytes | None = None) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.kind in kinds and f.applies_to(ids, body):
                    remaining = f.count if f.count is not None else default_count
                    if remaining is not None:
                        remaining -= 1
                        if remaining <= 0:
                            self._faults.remove(f)
                        else:
                            f.count = remaining
                    return f
        return None

    def take_operation_failure(self, kind: str, ids: set[str]) -> bool:
        """For ``deploy-fails`` / ``undeploy-fails``: whether this operation must fail."""
        return self._take((kind,), ids, 1) is not None

    def take_deploy_failure(self, ids: set[str]) -> bool:
        return self.take_operation_failure("deploy-fails", ids)

    def take_control_429(self, path: str) -> bool:
        """Whether this control-plane call must answer 429 (``target``: a path substring)."""
        with self._lock:
            for f in self._faults:
                if f.kind == "control-429" and (f.target is None or f.target in path):
                    f.count = (f.count or 1) - 1
                    if f.count <= 0:
                        self._faults.remove(f)
                    return True
        return False

    def routing_skew(self, deployed: dict[str, str]) -> tuple[str, int] | None:
        """(deployed model id, percent) of a routing-skew fault on one of ``deployed``
        (deployed model id → Model name), or None. Not consumed: it lasts until cleared."""
        with self._lock:
            skews = [f for f in self._faults if f.kind == "routing-skew"]
        for f in skews:
            for dm_id, model in deployed.items():
                if f.target in (dm_id, model):
                    return dm_id, int(f.percent or 0)
        return None

    def take_http_error(self, ids: set[str], body: bytes | None = None) -> int | None:
        """The status to fail this request with (a fault with ``match`` counts only the
        requests whose body matches), or None."""
        f = self._take(("http-503", "http-429"), ids, 1, body)
        return None if f is None else int(f.kind[-3:])

    def take_latency_ms(self, ids: set[str]) -> int:
        f = self._take(("latency",), ids, None)
        return int(f.ms or 0) if f is not None else 0


def inject_fault(api_endpoint: str, kind: str, target: str | None = None, count: int | None = None,
                 ms: int | None = None, percent: int | None = None, timeout: float = 30.0,
                 match: str | None = None) -> dict[str, Any]:
    """Asks a running local Vertex server (``http://127.0.0.1:PORT``) to inject a fault;
    returns the server's answer (for kill-replica: the pid killed)."""
    problem = Fault(kind, target, count, ms, percent, match).problem()
    if problem:
        raise ValueError(problem)
    fields = {"kind": kind, "target": target, "count": count, "ms": ms, "percent": percent, "match": match}
    body = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
    req = urllib.request.Request(f"{api_endpoint.rstrip('/')}/_local/faults", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return dict(json.loads(resp.read() or b"{}"))
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise RuntimeError(f"fault {kind} refused by {api_endpoint}: HTTP {e.code}: {detail}") from e
