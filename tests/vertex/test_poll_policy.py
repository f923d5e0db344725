"""The one poll policy (``vertex/retry.py``): its intervals, and the loops that wait for
something to change — a lease coming free, a split taking effect — sleeping by it (a run's
state and an operation are polled through it on the local stack: tests/cloud,
tests/deploy/test_operations.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.verify_traffic.test_lease import NAME, InMemoryEndpoint
from tune2serve.components.errors import EndpointBusyError
from tune2serve.components.verify_traffic import lease as lease_mod
from tune2serve.components.verify_traffic.canary import wait_until_serving
from tune2serve.components.vertex.endpoints import DeployedModelState, EndpointState
from tune2serve.components.vertex.retry import PollPolicy


@given(initial=st.floats(0.01, 60), cap=st.floats(0.01, 600), multiplier=st.floats(1.0, 4.0))
def test_intervals_back_off_to_the_cap(initial: float, cap: float, multiplier: float) -> None:
    policy = PollPolicy(initial, cap, multiplier)
    got = list(itertools.islice(policy.intervals(), 40))
    assert got[0] == initial
    assert all(b == min(cap, a * multiplier) for a, b in zip(got, got[1:]))
    assert list(itertools.islice(PollPolicy.every(initial).intervals(), 5)) == [initial] * 5


def test_waiting_for_a_lease_sleeps_by_the_policy() -> None:
    api = InMemoryEndpoint()
    lease_mod.acquire(api, NAME, "other-run", wait_s=0, settle_s=0, sleep=lambda s: None)
    now, slept = [1000.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    with pytest.raises(EndpointBusyError, match="holder other-run"):
        lease_mod.acquire(api, NAME, "me", wait_s=10, settle_s=0, poll=PollPolicy(1.0, 4.0, 2.0),
                          clock=lambda: now[0], sleep=sleep)
    assert slept == [1.0, 2.0, 4.0]  # then 4 more would pass the 10 s: said, not slept


class _NeverReady:
    """An endpoint whose new split never takes effect (its replica never comes up)."""

    def get_endpoint(self, name: str) -> EndpointState:
        return EndpointState(name=name, deployed_models=(DeployedModelState("1", "m", available_replica_count=0),),
                             traffic_split={"1": 100})


def test_waiting_for_a_split_sleeps_by_the_policy() -> None:
    slept: list[float] = []
    state = wait_until_serving(_NeverReady(), NAME, {"1": 100}, timeout_s=7.5, poll=PollPolicy(1.0, 8.0, 2.0),
                               sleep=slept.append)
    assert state.traffic_split == {"1": 100}
    assert slept == [1.0, 2.0, 4.0]  # the next 8 s would pass the 7.5 s: the last state is returned
