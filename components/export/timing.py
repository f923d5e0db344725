"""Where an export's time goes: seconds per stage, summed over the threads that ran it.

The export overlaps reading+merging (one thread), hashing and writing (one thread each),
so the stage sums add up to more than the wall time; the ``… waits`` stages say which
side was the bottleneck (a producer waiting for free buffers: the disk/hash side was
slower; a writer waiting for chunks: the merge side was). Always on: one
``perf_counter`` pair per ~16 MB chunk or ~1M-element block costs nothing measurable.
``bench/bench_export.py --profile`` prints it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Spans:
    """Thread-safe accumulator of wall seconds, and CPU seconds of the thread that did
    the work where measured, per stage name. On a shared machine the two differ: wall
    includes waiting for a core, CPU is the work itself."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float, cpu: float | None = None) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            if cpu is not None:
                self.cpu[name] = self.cpu.get(name, 0.0) + cpu

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start, time.thread_time() - cpu)

    def to_json(self) -> dict[str, dict[str, float]]:
        """``{stage: {"wall": s, "cpu": s}}`` (cpu absent for waits)."""
        with self._lock:
            return {k: {"wall": round(v, 3), **({"cpu": round(self.cpu[k], 3)} if k in self.cpu else {})}
                    for k, v in sorted(self.seconds.items())}
