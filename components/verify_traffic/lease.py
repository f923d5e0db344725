"""A lease on an endpoint, so two promotions onto it never interleave.

The lease is two labels on the endpoint (holder, expiry in Unix seconds), written by a
compare-and-swap: the update carries the etag read just before, and Vertex refuses it
if anyone changed the endpoint in between. Whoever's write lands holds the lease; the
other re-reads, sees the holder, and waits (bounded) or fails naming it. An expired
lease (a holder that died) may be taken over. Belt and braces: a server that ignored
the etag would let two racing writers both "win", so after its write a taker waits
``settle_s`` (longer than a racing taker's read-then-write round trip) and reads again;
it holds the lease only if it is still the holder then. Every label write made under the lease
goes through ``update_labels`` here, which re-checks the holder and renews the expiry.

A third label names the run the holder works for. The pipeline's exit handler runs
after every task of its run has ended, so a lease still held by its own run is a dead
holder's: ``take_over_run`` lets that clean-up take it at once instead of waiting for
the expiry (an hour) — never a lease held for another run.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tune2serve.components.errors import EndpointBusyError, VertexError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.verify_traffic.endpoint_api import EndpointApi, is_etag_conflict
from tune2serve.components.vertex.resources import sanitize_label_value
from tune2serve.components.vertex.retry import PollPolicy
from tune2serve.components.vertex.endpoints import EndpointState

HOLDER = "tune2serve-lease-holder"
EXPIRES = "tune2serve-lease-expires"
RUN = "tune2serve-lease-run"
DEFAULT_TTL_S = 3600.0
DEFAULT_WAIT_S = 60.0
DEFAULT_SETTLE_S = 0.5
LEASE_POLL = PollPolicy.every(2.0)  # another holder's lease: asked again every 2 s, up to wait_s
MAX_CAS_ATTEMPTS = 8

_log = get_logger("verify_traffic.lease")
Labels = dict[str, str]


def new_holder_id() -> str:
    return sanitize_label_value(f"{socket.gethostname()[:30]}-{os.getpid()}-{secrets.token_hex(4)}")


def lease_holder(labels: Labels, now: float) -> str | None:
    """Who holds an unexpired lease in ``labels`` (None if nobody)."""
    holder = labels.get(HOLDER, "")
    try:
        expires = float(labels.get(EXPIRES, "0"))
    except ValueError:
        expires = 0.0
    return holder if holder and expires > now else None


@dataclass
class Lease:
    api: EndpointApi
    endpoint: str
    holder: str
    ttl_s: float = DEFAULT_TTL_S
    clock: Callable[[], float] = time.time

    def update_labels(self, mutate: Callable[[Labels], Labels]) -> EndpointState:
        """Read, check we still hold the lease, write ``mutate(labels)`` plus a renewed
        expiry with the etag just read; on a conflict, read again and retry."""
        for _ in range(MAX_CAS_ATTEMPTS):
            state = self.api.get_endpoint(self.endpoint)
            holder = lease_holder(state.labels, self.clock())
            if holder != self.holder:
                raise EndpointBusyError(f"{self.endpoint}: lost the promotion lease (now held by {holder or 'nobody'})",
                                        holder=holder or "")
            labels = {**mutate(dict(state.labels)), HOLDER: self.holder, EXPIRES: str(int(self.clock() + self.ttl_s))}
            try:
                return self.api.update_labels(self.endpoint, labels, state.etag)
            except VertexError as e:
                if not is_etag_conflict(e):
                    raise
        raise EndpointBusyError(f"{self.endpoint}: the endpoint kept changing under us; try again", holder="")

    def release(self) -> None:
        def drop(labels: Labels) -> Labels:
            return {k: v for k, v in labels.items() if k not in (HOLDER, EXPIRES, RUN)}

        for _ in range(MAX_CAS_ATTEMPTS):
            state = self.api.get_endpoint(self.endpoint)
            if state.labels.get(HOLDER) != self.holder:
                return
            try:
                self.api.update_labels(self.endpoint, drop(state.labels), state.etag)
                log_event(_log, "lease.released", f"released the lease on {self.endpoint}", endpoint=self.endpoint)
                return
            except VertexError as e:
                if not is_etag_conflict(e):
                    raise


def held_by_run(labels: Labels, run: str) -> bool:
    """Whether the lease in ``labels`` was taken for run ``run`` (a non-empty run id)."""
    return bool(run) and labels.get(RUN, "") == sanitize_label_value(run)


def try_acquire(api: EndpointApi, endpoint: str, holder: str, *, run: str = "", take_over_run: bool = False,
                ttl_s: float = DEFAULT_TTL_S, settle_s: float = DEFAULT_SETTLE_S, clock: Callable[[], float] = time.time,
                sleep: Callable[[float], None] = time.sleep) -> tuple[Lease | None, str, float]:
    """One compare-and-swap attempt. Returns (lease, "", 0) or (None, other holder, its expiry)."""
    state = api.get_endpoint(endpoint)
    other = lease_holder(state.labels, clock())
    if other and other != holder:
        if not (take_over_run and held_by_run(state.labels, run)):
            return None, other, float(state.labels.get(EXPIRES, "0"))
        log_event(_log, "lease.take_over", f"{endpoint}: taking over the lease of {other}, a dead holder of the "
                  f"same run {run}", logging.WARNING, endpoint=endpoint, holder=other, run=run)
    labels = {**state.labels, HOLDER: holder, EXPIRES: str(int(clock() + ttl_s))}
    if run:
        labels[RUN] = sanitize_label_value(run)
    else:
        labels.pop(RUN, None)
    try:
        api.update_labels(endpoint, labels, state.etag)
    except VertexError as e:
        if is_etag_conflict(e):  # someone wrote first: say who, if it was a taker
            now = api.get_endpoint(endpoint).labels
            return None, lease_holder(now, clock()) or "", float(now.get(EXPIRES, "0") or 0)
        raise
    sleep(settle_s)
    after = api.get_endpoint(endpoint).labels
    if after.get(HOLDER) != holder:
        return None, after.get(HOLDER, ""), float(after.get(EXPIRES, "0") or 0)
    return Lease(api, endpoint, holder, ttl_s, clock), "", 0.0


def acquire(api: EndpointApi, endpoint: str, holder: str, *, run: str = "", take_over_run: bool = False,
            ttl_s: float = DEFAULT_TTL_S, wait_s: float = DEFAULT_WAIT_S, poll: PollPolicy = LEASE_POLL,
            settle_s: float = DEFAULT_SETTLE_S, clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep) -> Lease:
    """Takes the lease, waiting up to ``wait_s`` for another holder to finish.

    Raises:
        EndpointBusyError: still held by someone else after ``wait_s`` (the message names them).
    """
    deadline = clock() + wait_s
    other, expires = "", 0.0
    for interval in poll.intervals():
        lease, seen, seen_expires = try_acquire(api, endpoint, holder, run=run, take_over_run=take_over_run,
                                               ttl_s=ttl_s, settle_s=settle_s, clock=clock, sleep=sleep)
        if lease is not None:
            log_event(_log, "lease.acquired", f"holding the promotion lease on {endpoint}", endpoint=endpoint,
                      holder=holder)
            return lease
        other, expires = seen or other, seen_expires or expires
        if clock() + interval > deadline:
            raise EndpointBusyError(
                f"{endpoint}: another promotion holds the endpoint (holder {other or 'unknown'}, lease until "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires)) if expires else 'unknown'}); "
                "wait for it to finish, or if it died, wait for the lease to expire",
                holder=other, expires_at=expires)
        log_event(_log, "lease.waiting", f"{endpoint} is held by {other or 'a concurrent writer'}; waiting",
                  logging.INFO, endpoint=endpoint, holder=other)
        sleep(interval)
    raise AssertionError("unreachable: a poll policy's intervals do not end")


@contextmanager
def held(api: EndpointApi, endpoint: str, holder: str | None = None, *, run: str = "", take_over_run: bool = False,
         **kwargs: float) -> Iterator[Lease]:
    lease = acquire(api, endpoint, holder or new_holder_id(), run=run, take_over_run=take_over_run,
                    **kwargs)  # type: ignore[arg-type]
    try:
        yield lease
    finally:
        try:
            lease.release()
        except VertexError as e:  # the lease expires on its own; say so rather than mask the real outcome
            log_event(_log, "lease.release_failed", f"could not release the lease on {endpoint}: {e}; it expires "
                      "on its own", logging.WARNING, endpoint=endpoint)
