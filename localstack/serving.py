"""Model servers: one ``transformers serve`` process per replica, on CPU, on 127.0.0.1.

The Vertex server starts replicas when a deploy operation runs and stops them on
undeploy; a health loop polls each replica's ``/health`` (and whether its process is
alive) once a second, which is what ``availableReplicaCount`` reports. A replica that
dies is not restarted by itself (so a killed replica is visible, as a fault should be);
``tune2serve local up`` on a running stack restarts missing replicas.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tune2serve.components.logs import get_logger, log_event
from tune2serve.localstack import procs
from tune2serve.localstack.errors import ReplicaStartError
from tune2serve.localstack.ports import free_port

_log = get_logger("local.serving")


def transformers_cli() -> list[str]:
    exe = Path(sys.executable).parent / "transformers"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("transformers")
    if not found:
        raise ReplicaStartError("the `transformers` command is not installed (pip install 'transformers[serving]')")
    return [found]


def serve_command(model_dir: Path, port: int) -> list[str]:
    return transformers_cli() + [
        "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--device", "cpu", "--log-level", "warning",
    ]


def replica_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    threads = os.environ.get("TUNE2SERVE_REPLICA_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", threads)
    env.setdefault("MKL_NUM_THREADS", threads)
    return env


@dataclass
class Replica:
    deployed_model_id: str
    index: int
    port: int
    process: subprocess.Popen[bytes] | None
    record: procs.PidRecord
    log_path: Path
    healthy: bool = False
    failures: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.record.alive()


@dataclass
class Supervisor:
    """Every replica this Vertex server runs, by deployed model id."""

    home: Path
    replicas: dict[str, list[Replica]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _rr: itertools.count = field(default_factory=itertools.count)

    @property
    def run_dir(self) -> Path:
        return self.home / "run" / "replicas"

    def _start_one(self, dm_id: str, index: int, model_dir: Path) -> Replica:
        port = free_port()
        log_path = self.home / "logs" / f"replica-{dm_id}-{index}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                serve_command(model_dir, port), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=replica_env(), start_new_session=True,
            )
        record = procs.PidRecord.of(proc.pid, f"replica {dm_id}/{index}", port)
        procs.write_pidfile(self.run_dir / f"{dm_id}-{index}.json", record)
        log_event(_log, "replica.start", f"starting model server for {dm_id} on port {port}",
                  deployed_model_id=dm_id, port=port, pid=proc.pid)
        return Replica(dm_id, index, port, proc, record, log_path)

    def start(self, dm_id: str, model_dir: Path, count: int, timeout: float | None = None) -> list[Replica]:
        """Starts ``count`` replicas and waits until each answers /health."""
        timeout = timeout or float(os.environ.get("TUNE2SERVE_REPLICA_START_TIMEOUT", "180"))
        with self.lock:
            existing = self.replicas.setdefault(dm_id, [])
            first = max((r.index for r in existing), default=-1) + 1
            new = [self._start_one(dm_id, first + i, model_dir) for i in range(count)]
            existing.extend(new)
        try:
            for r in new:
                self._wait_healthy(r, timeout)
        except ReplicaStartError:
            for r in new:
                self._stop_replica(r)
            with self.lock:
                self.replicas[dm_id] = [r for r in self.replicas.get(dm_id, []) if r not in new]
            raise
        return new

    def _wait_healthy(self, r: Replica, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if not r.alive():
                    raise ReplicaStartError(f"model server for deployed model {r.deployed_model_id} exited "
                                            f"during start-up; its log ends with:\n{_tail(r.log_path)}")
                try:
                    if client.get(f"{r.url}/health").status_code == 200:
                        r.healthy = True
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise ReplicaStartError(f"model server for deployed model {r.deployed_model_id} did not answer "
                                f"/health within {timeout:.0f} s; its log ends with:\n{_tail(r.log_path)}")

    def _stop_replica(self, r: Replica) -> None:
        procs.stop(r.record, timeout=5.0)
        if r.process is not None:
            try:
                r.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        r.healthy = False
        (self.run_dir / f"{r.deployed_model_id}-{r.index}.json").unlink(missing_ok=True)

    def stop(self, dm_id: str) -> None:
        with self.lock:
            gone = self.replicas.pop(dm_id, [])
        for r in gone:
            self._stop_replica(r)

    def scale(self, dm_id: str, model_dir: Path, count: int) -> None:
        with self.lock:
            current = list(self.replicas.get(dm_id, []))
        if len(current) < count:
            self.start(dm_id, model_dir, count - len(current))
        for r in current[count:]:
            self._stop_replica(r)
            with self.lock:
                self.replicas[dm_id].remove(r)

    def repair(self, dm_id: str, model_dir: Path, count: int) -> None:
        """Restarts replicas whose process died, so ``count`` run again."""
        with self.lock:
            dead = [r for r in self.replicas.get(dm_id, []) if not r.alive()]
            for r in dead:
                self.replicas[dm_id].remove(r)
        for r in dead:
            self._stop_replica(r)
        self.scale(dm_id, model_dir, count)

    def stop_all(self) -> None:
        with self.lock:
            ids = list(self.replicas)
        for dm_id in ids:
            self.stop(dm_id)

    def kill_stale(self) -> None:
        """Stops replicas a previous, crashed server left behind (found by pid file)."""
        if not self.run_dir.is_dir():
            return
        for path in self.run_dir.glob("*.json"):
            record = procs.read_pidfile(path)
            if record is not None:
                procs.stop(record, timeout=3.0)
            path.unlink(missing_ok=True)

    def kill_one(self, dm_id: str) -> int | None:
        """The kill-replica fault: SIGKILL one live replica; returns its pid."""
        with self.lock:
            live = [r for r in self.replicas.get(dm_id, []) if r.alive()]
        if not live:
            return None
        r = live[0]
        r.healthy = False
        os.killpg(r.record.pid, 9)
        if r.process is not None:
            r.process.wait(timeout=5)
        return r.record.pid

    def available(self, dm_id: str) -> int:
        with self.lock:
            return sum(1 for r in self.replicas.get(dm_id, []) if r.healthy)

    def pick(self, dm_id: str) -> Replica | None:
        """A healthy replica, round-robin (Vertex balances between one model's replicas)."""
        with self.lock:
            healthy = [r for r in self.replicas.get(dm_id, []) if r.healthy]
        if not healthy:
            return None
        return healthy[next(self._rr) % len(healthy)]

    def health_loop(self, stop: threading.Event, interval: float = 1.0) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not stop.wait(interval):
                with self.lock:
                    every = [r for rs in self.replicas.values() for r in rs]
                for r in every:
                    if not r.alive():
                        r.healthy = False
                        continue
                    try:
                        ok = client.get(f"{r.url}/health").status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    # A busy server may miss one check; three misses in a row mean down.
                    r.failures = 0 if ok else r.failures + 1
                    r.healthy = ok or (r.healthy and r.failures < 3)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
