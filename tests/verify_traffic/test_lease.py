"""The lease's take-over rule, on an in-memory endpoint with Vertex's etag compare-and-swap
(pure and fast; the stack tests run the same code against the local Vertex server)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tune2serve.components.errors import EndpointBusyError, VertexUserError
from tune2serve.components.verify_traffic import lease as lease_mod
from tune2serve.components.vertex.endpoints import EndpointState

NAME = "projects/p/locations/l/endpoints/1"


class InMemoryEndpoint:
    """``get_endpoint``/``update_labels`` of ``EndpointApi`` over one endpoint's labels."""

    def __init__(self) -> None:
        self._etags = itertools.count(1)
        self.labels: dict[str, str] = {"team": "ml"}
        self.etag = str(next(self._etags))

    def get_endpoint(self, name: str) -> EndpointState:
        return EndpointState(name=name, labels=dict(self.labels), etag=self.etag)

    def update_labels(self, name: str, labels: dict[str, str], etag: str) -> EndpointState:
        if etag != self.etag:
            raise VertexUserError("409 ABORTED etag mismatch", status_code=409, resource_name=name)
        self.labels, self.etag = dict(labels), str(next(self._etags))
        return self.get_endpoint(name)


def _take(api: Any, holder: str, run: str, take_over: bool) -> lease_mod.Lease:
    return lease_mod.acquire(api, NAME, holder, run=run, take_over_run=take_over, wait_s=0, settle_s=0,
                             sleep=lambda s: None)


def test_the_same_runs_cleanup_takes_over_a_dead_holders_lease() -> None:
    api = InMemoryEndpoint()
    _take(api, "dead-task", "run-x", take_over=False)  # and it dies holding it
    lease = _take(api, "finalize", "Run-X", take_over=True)
    assert api.labels[lease_mod.HOLDER] == "finalize" and api.labels[lease_mod.RUN] == "run-x"
    lease.release()
    assert api.labels == {"team": "ml"}


@pytest.mark.parametrize("run,take_over", [("run-y", True), ("run-x", False), ("", True)])
def test_a_lease_of_another_run_or_without_take_over_is_left_alone(run: str, take_over: bool) -> None:
    api = InMemoryEndpoint()
    _take(api, "live-task", "run-x", take_over=False)
    before = dict(api.labels)
    with pytest.raises(EndpointBusyError, match="holder live-task"):
        _take(api, "finalize", run, take_over=take_over)
    assert api.labels == before
