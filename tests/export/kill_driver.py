"""Runs ``tune2serve ARGS`` in this process and SIGKILLs it at a chosen instant (tests only).

``run(argv, env, log)`` (in a child process: ``multiprocessing``'s forkserver, with torch
and the export preloaded, so a run costs the export and not the imports) or
``python -m tests.export.kill_driver export SOURCE DEST ...``, with, in the environment:

* ``KILL_AT=PHASE:N:WHEN[:STOP]`` — kill at the N-th (0-based) event of PHASE, just
  ``before`` or ``after`` it happens (``write`` events: after the N-th chunk reached the
  shard file); with ``:STOP``, SIGSTOP instead (the process stalls there until SIGCONT:
  a writer frozen by a long pause, whose lease runs out).
* ``KILL_RECORD=PATH`` — append each event's phase to PATH, one a line (to count them).

Events are the instants that change what is at DEST, or the work between them, named by
the export's phase:

=========  ==================================================================================
plan       the claim taken (``Publisher.claim``), the output planned (``plan_output``)
write      a chunk of a shard written to its file (``ShardFile.write``)
upload     a shard recorded (pending, then landed) or staged (``upload_file``)
index      a small file (config, tokenizer, the index) recorded or staged
commit     a file published under its final name (``publish_to``)
manifest   ``manifest.json`` written, then each staged file removed
=========  ==================================================================================

The hooks wrap the real methods (the storage layer's and the publisher's); nothing is
mocked: the bytes go to the real local disk or fake-gcs-server. SIGKILL is the whole
point: no ``finally`` runs, no buffer is flushed — as when a machine dies.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PHASES = ("plan", "write", "upload", "index", "commit", "manifest")
PRELOAD = ["torch", "tune2serve.components.export.export", "tune2serve.cli.main", "google.cloud.storage",
           "tests.export.kill_driver"]
_counts: dict[str, int] = {}
_lock = threading.Lock()
_target = ""
_record = ""
_manifest_written = threading.Event()
_locks = threading.Condition()  # local directory locks held now, and the gate that stops new ones
_held = 0
_gate = False


def _event(phase: str, when: str, n: int | None = None) -> int:
    """Counts an event of ``phase`` (on its ``before``; its ``after`` passes the number
    it got, since events of other threads may be counted in between) and kills the
    process when it is the chosen one. Returns the event's number."""
    if n is None:
        with _lock:
            if _record:
                with open(_record, "a") as fh:
                    fh.write(phase + "\n")
            n = _counts.get(phase, 0)
            _counts[phase] = n + 1
    if _target and _target.removesuffix(":STOP") == f"{phase}:{n}:{when}":
        if _target.endswith(":STOP"):
            _freeze()
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return n


def _freeze() -> None:
    """SIGSTOP between two storage operations: a writer stalled (its lease running out),
    not one frozen inside the few microseconds a local directory lock is held (that would
    make other writers wait for the lock instead: a different case)."""
    global _gate
    with _locks:
        _gate = True
        while _held:
            _locks.wait()
    os.kill(os.getpid(), signal.SIGSTOP)
    # The stop reaches every thread within moments, not at once: the gate stays shut a
    # while, so no thread takes a lock in between and is frozen holding it.
    time.sleep(1.0)
    with _locks:
        _gate = False
        _locks.notify_all()


def _gated_lock(real: Callable[[Any], Any]) -> Callable[[Any], Any]:
    from contextlib import contextmanager

    @contextmanager
    def lock(folder: Any) -> Any:
        global _held
        with _locks:
            while _gate:
                _locks.wait()
            _held += 1
        try:
            with real(folder):
                yield
        finally:
            with _locks:
                _held -= 1
                _locks.notify_all()

    return lock


def _hook(owner: type, method: str, phase_of: Callable[..., str | None]) -> None:
    real = getattr(owner, method)

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        phase = phase_of(self, *args, **kwargs)
        n = _event(phase, "before") if phase else 0
        result = real(self, *args, **kwargs)
        if phase:
            _event(phase, "after", n)
        return result

    setattr(owner, method, wrapped)


def _by_name(name: str) -> str:
    return "upload" if name.endswith(".safetensors") else "index"


def install() -> None:
    from tune2serve.components.checkpoint import storage
    from tune2serve.components.checkpoint.storage import GcsFolder, LocalFolder
    from tune2serve.components.export import export as export_module
    from tune2serve.components.export.publish import shard_file, upload

    storage._dir_lock = _gated_lock(storage._dir_lock)
    _hook(upload.Publisher, "claim", lambda self: "plan")
    _hook(upload.Publisher, "_record", lambda self, name, entry, **kw: _by_name(name))
    _hook(shard_file.ShardFile, "write", lambda self, view: "write")
    for folder in (LocalFolder, GcsFolder):
        _hook(folder, "upload_file", lambda self, name, path, **kw: _by_name(name))
        _hook(folder, "publish_to", lambda self, name, target, *a, **kw: "commit")
        _hook(folder, "write_bytes", lambda self, name, data, **kw: (_manifest_written.set() or "manifest")
              if name == "manifest.json" else None)
        _hook(folder, "delete", lambda self, name, **kw: "manifest" if _manifest_written.is_set() else None)
    real_plan = export_module.plan_output

    def plan_output(*args: Any, **kwargs: Any) -> Any:
        n = _event("plan", "before")
        result = real_plan(*args, **kwargs)
        _event("plan", "after", n)
        return result

    export_module.plan_output = plan_output


def main(argv: list[str]) -> int:
    global _target, _record
    _target, _record = os.environ.get("KILL_AT", ""), os.environ.get("KILL_RECORD", "")
    install()
    from tune2serve.cli.main import main as cli_main

    return cli_main(argv)


def run(argv: list[str], env: dict[str, str], log: str) -> None:
    """A child process's body: ``env`` set, stdout and stderr to ``log``, then ``main``;
    exits with its code (or dies by SIGKILL)."""
    for name in [n for n in os.environ if n.startswith(("TUNE2SERVE_", "KILL_")) or n == "STORAGE_EMULATOR_HOST"]:
        del os.environ[name]
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    code = main([str(a) for a in argv])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start(argv: list[str], env: dict[str, str], log: str) -> Any:
    """``run`` in a child forked from a server that has torch and the export imported."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    process = ctx.Process(target=run, args=(argv, env, log), daemon=True)
    process.start()
    return process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
