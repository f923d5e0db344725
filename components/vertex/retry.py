"""The one retry policy and the one poll policy.

Retry (``RetryPolicy``, ``call_with_retry``): exponential backoff with full jitter, a cap
on attempts and an overall deadline. Only ``VertexUnavailableError`` (429/5xx/
connection) is retried; everything else is raised at once.

Poll (``PollPolicy``): how often a loop that waits for something to change looks again —
a long-running operation, a pipeline run, a traffic split taking effect, a lease coming
free. Every such loop takes its intervals from a ``PollPolicy`` (its own named default),
so how each one waits is said in one way and tuned in one place."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from tune2serve.components.errors import VertexUnavailableError
from tune2serve.components.logs import get_logger, log_event

T = TypeVar("T")
_log = get_logger("retry")


@dataclass(frozen=True)
class RetryPolicy:
    initial_delay_s: float = 0.5
    max_delay_s: float = 10.0
    multiplier: float = 2.0
    max_attempts: int = 6
    deadline_s: float = 120.0

    def delays(self, rng: random.Random | None = None) -> list[float]:
        """The sleep before each retry (full jitter keeps retrying clients apart)."""
        rng = rng or random.Random()
        out, cap = [], self.initial_delay_s
        for _ in range(self.max_attempts - 1):
            out.append(rng.uniform(0, cap))
            cap = min(self.max_delay_s, cap * self.multiplier)
        return out


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class PollPolicy:
    """How often to poll: starts at ``initial_interval_s`` (a local deploy takes seconds),
    backs off by ``multiplier`` to ``max_interval_s`` (a cloud deploy takes 10-40 minutes)."""

    initial_interval_s: float = 1.0
    max_interval_s: float = 30.0
    multiplier: float = 1.5

    @classmethod
    def every(cls, seconds: float) -> PollPolicy:
        """A fixed interval (for a loop whose cadence is given, e.g. ``submit --poll``)."""
        return cls(initial_interval_s=seconds, max_interval_s=seconds, multiplier=1.0)

    def intervals(self) -> Iterator[float]:
        interval = self.initial_interval_s
        while True:
            yield interval
            interval = min(self.max_interval_s, interval * self.multiplier)


DEFAULT_POLL = PollPolicy()


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    retry_on: tuple[type[BaseException], ...] = (VertexUnavailableError,),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Calls ``fn`` until it succeeds, a non-retryable error is raised, the attempts run
    out or the deadline passes (then the last error is raised)."""
    started = time.monotonic()
    delays = policy.delays()
    for attempt in range(policy.max_attempts):
        try:
            return fn()
        except retry_on as e:
            if attempt >= len(delays) or time.monotonic() - started + delays[attempt] > policy.deadline_s:
                raise
            log_event(_log, "retry", f"{what}: {e}; retrying in {delays[attempt]:.1f} s",
                      logging.WARNING, attempt=attempt + 1, what=what)
            sleep(delays[attempt])
    raise AssertionError("unreachable")
