"""The one retry policy: exponential backoff with full jitter, a cap on attempts and an
overall deadline. Only ``VertexUnavailableError`` (429/5xx/connection) is retried;
everything else is raised at once."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
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
