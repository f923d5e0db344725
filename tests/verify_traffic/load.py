"""Continuous client load on an endpoint (8 concurrent clients by default), counting
every failed request: what users of the endpoint would see during a promotion. With
``bodies``, each client cycles through those request bodies (e.g. some with a marker a
``--match`` fault fails)."""

from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import cycle
from typing import Any

from tune2serve.components.verify_traffic.probe import probe_request_body, send_one
from tune2serve.components.vertex.dedicated_endpoint import request_url


def ssl_context(verify: str | bool) -> ssl.SSLContext | bool:
    """httpx wants an SSLContext for a CA file (a path string is deprecated)."""
    return ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify


@dataclass
class Load:
    dns: str
    endpoint: str
    clients: int = 8
    bodies: tuple[dict[str, Any], ...] = ()
    stop: threading.Event = field(default_factory=threading.Event)
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # time.time() of each failed answer
    answered_by: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _client_loop(self) -> None:
        import httpx

        from tune2serve.components.vertex.clients import tls_verify

        url = request_url("chat", self.dns, self.endpoint)
        bodies = cycle(self.bodies or (probe_request_body(),))
        with httpx.Client(verify=ssl_context(tls_verify()), timeout=30.0) as client:
            while not self.stop.is_set():
                a = send_one(client, url, next(bodies))
                with self._lock:
                    if a.ok:
                        self.ok += 1
                    else:
                        self.failed.append(f"{a.status} {a.deployed_model_id} {a.error[:120]}")
                        self.failed_at.append(time.time())
                    self.answered_by[a.deployed_model_id or "-"] += 1

    @property
    def total(self) -> int:
        return self.ok + len(self.failed)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._client_loop, daemon=True) for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=60)
