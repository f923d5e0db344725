"""The local stack as hints name it: a ``tune2serve local`` command that works pasted as
printed, and whether a stack runs where that command looks.

A hint that drops the ``--home`` the user gave sends them to another (empty) stack, so
every hint about the local stack is made here, with the flag when it is needed.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from tune2serve.localstack import procs
from tune2serve.localstack.stack import LocalStack, resolve_home


def local_command(action: str, home: str | os.PathLike[str] | None = None) -> str:
    """``tune2serve local ACTION``, with ``--home DIR`` when ``home`` is not the home the
    command finds by itself ($TUNE2SERVE_HOME, else ./.tune2serve)."""
    where = Path(home).resolve() if home else resolve_home()
    flag = f" --home {shlex.quote(str(where))}" if where != resolve_home() else ""
    return f"tune2serve local {action}{flag}"


def running_home() -> Path | None:
    """The home of a local stack whose Vertex server runs where ``tune2serve local`` looks
    by default, or None: lets a credentials error say the stack is right here."""
    stack = LocalStack(resolve_home())
    record = procs.read_pidfile(stack.pidfile("vertex"))
    return stack.home if record is not None and record.alive() else None


__all__ = ["local_command", "running_home"]
