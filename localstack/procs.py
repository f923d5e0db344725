"""Process bookkeeping for the local stack: pid files that survive the process that wrote
them, and stopping a process only when it is still the one we started.

A pid file holds the pid and the process start time (``/proc/PID/stat`` field 22), so a
pid reused by an unrelated process after a reboot or crash is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


def start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after the last ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields and fields[0] == "Z":  # a zombie has exited already
        return None
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class PidRecord:
    pid: int
    started: str
    name: str
    port: int | None = None

    def alive(self) -> bool:
        return start_time(self.pid) == self.started

    @classmethod
    def of(cls, pid: int, name: str, port: int | None = None) -> PidRecord:
        return cls(pid, start_time(pid) or "", name, port)


def write_pidfile(path: Path, record: PidRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.__dict__))
    os.replace(tmp, path)


def read_pidfile(path: Path) -> PidRecord | None:
    try:
        return PidRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def stop(record: PidRecord, timeout: float = 10.0) -> bool:
    """SIGTERM the process group the record leads (we start every process in a new
    session), SIGKILL after ``timeout``. Returns True when it was running."""
    if not record.alive():
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(record.pid, sig)
        except ProcessLookupError:
            return True
        except PermissionError:
            os.kill(record.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(record.pid)
            if not record.alive():
                return True
            time.sleep(0.05)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
