"""Helpers for the publish-path tests (kills, races, changing sources): what is at a DEST,
whether its manifest describes it, and export runs in child processes that can be killed
or frozen at a named instant (``kill_driver``)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.export import kill_driver


def snapshot(dest: str) -> dict[str, bytes]:
    """Every file under DEST (local folder or gs:// prefix) with its bytes, read through
    the storage layer; a local DEST also reports a leftover ``_staging/`` folder (even
    empty) as ``"_staging/"``."""
    from tune2serve.components.checkpoint.storage import open_folder

    folder = open_folder(dest)
    if not folder.exists():
        return {}
    files = {o.name: folder.read_bytes(o.name) for o in folder.list()}
    root = folder.local_root()
    if root is not None and (root / "_staging").exists():
        files.setdefault("_staging/", b"")
    return files


def assert_manifest_describes(files: dict[str, bytes]) -> None:
    """``manifest.json`` names exactly the other files, each with its size and sha256."""
    manifest = json.loads(files["manifest.json"])
    described = {f["name"]: f for f in manifest["files"]}
    assert set(described) == set(files) - {"manifest.json"}, sorted(set(described) ^ (set(files) - {"manifest.json"}))
    for name, entry in described.items():
        assert entry["size"] == len(files[name]) and entry["sha256"] == hashlib.sha256(files[name]).hexdigest(), name


def env_for(gcs_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TUNE2SERVE_LOG_FORMAT": "json", **extra}
    if gcs_url:
        env["STORAGE_EMULATOR_HOST"] = gcs_url
    return env


class Child:
    """``tune2serve ARGS`` in a child process (forked from a server with torch and the
    export preloaded), its output in a log file. ``reap`` kills what a test left running
    (a frozen child would otherwise hang the interpreter's exit)."""

    running: list[Child] = []

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.process = kill_driver.start(args, env, str(log))
        Child.running.append(self)

    @classmethod
    def reap(cls) -> None:
        for child in cls.running:
            if child.process.exitcode is None:
                os.kill(child.process.pid, signal.SIGKILL)
                child.process.join(10)
        cls.running.clear()

    def wait(self, timeout: float = 120.0) -> int:
        self.process.join(timeout)
        assert self.process.exitcode is not None, f"still running after {timeout} s:\n{self.output()[-2000:]}"
        return int(self.process.exitcode)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stopped(self, timeout: float = 60.0) -> None:
        """Waits until the child froze itself (``KILL_AT=...:STOP``)."""
        deadline = time.monotonic() + timeout
        pid = self.process.pid
        while time.monotonic() < deadline:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "T":
                return
            assert self.process.exitcode is None, f"exited {self.process.exitcode} before freezing:\n{self.output()[-2000:]}"
            time.sleep(0.02)
        raise AssertionError(f"did not freeze within {timeout} s")

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


def run_child(args: list[str], env: dict[str, str], log: Path, timeout: float = 120.0) -> tuple[int, str]:
    child = Child(args, env, log)
    return child.wait(timeout), child.output()


def event_counts(args: list[str], env: dict[str, str], tmp: Path) -> dict[str, int]:
    """How many events of each phase an uninterrupted run makes (``KILL_RECORD``)."""
    record = tmp / f"events-{time.monotonic_ns()}.txt"
    code, out = run_child(args, {**env, "KILL_RECORD": str(record)}, tmp / f"record-{time.monotonic_ns()}.log")
    assert code == 0, out[-3000:]
    counts: dict[str, int] = {}
    for line in record.read_text().split():
        counts[line] = counts.get(line, 0) + 1
    return counts


def no_traceback(output: str) -> None:
    assert "Traceback" not in output, output[-3000:]


def parse_json_stdout(output: str) -> dict[str, Any] | None:
    """The ``--json`` object among a child's log lines (logs are JSON lines too: the one
    with an ``ok`` key)."""
    for line in output.splitlines():
        if line.startswith("{") and '"ok"' in line and '"dest"' in line:
            return json.loads(line)
    return None


@pytest.fixture(autouse=True)
def reap_children() -> Iterator[None]:
    """Imported by the test modules that start children: none outlives its test."""
    yield
    Child.reap()
