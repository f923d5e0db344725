"""``LocalStack``: start, stop and describe the local stack under one home directory.

``up`` starts two detached background processes (new sessions, logs in HOME/logs, pid
files in HOME/run): fake-gcs-server and the Vertex server (control plane on HTTP, data
plane on HTTPS, model servers as its children). It waits until they answer, is
idempotent (a running stack is left alone, dead model replicas are restarted), and keeps
the ports chosen at the first ``up`` in HOME/stack.json so ``env`` stays stable. ``down``
stops every process it started, model servers included, and verifies by pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune2serve.localstack import gcs, procs, tls
from tune2serve.localstack.errors import StackError
from tune2serve.localstack.ports import free_port
from tune2serve.localstack.state import DEFAULT_ENGINE, StackConfig

DEFAULT_HOME = ".tune2serve"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """``--home``, else $TUNE2SERVE_HOME, else ``.tune2serve`` in the working directory."""
    return Path(home or os.environ.get("TUNE2SERVE_HOME") or DEFAULT_HOME).resolve()


def _get_json(url: str, timeout: float = 2.0, data: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def _engine_status(engine: str) -> dict[str, str]:
    """{"name", "version"} of the stack's engine, or {"name", "error"} when it is not installed."""
    from tune2serve.localstack.serving import engine_version

    try:
        return {"name": engine, "version": engine_version(engine)}
    except StackError as e:
        return {"name": engine, "error": str(e)}


@dataclass
class LocalStack:
    home: Path

    @property
    def config(self) -> StackConfig:
        config = StackConfig.load(self.home)
        if config is None:
            raise StackError(f"no local stack in {self.home}: run `tune2serve local up` first")
        return config

    @property
    def api_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.config.vertex_port}"

    @property
    def gcs_url(self) -> str:
        return f"http://127.0.0.1:{self.config.gcs_port}"

    def pidfile(self, name: str) -> Path:
        return self.home / "run" / f"{name}.json"

    def env(self) -> dict[str, str]:
        ca = str(tls.tls_files(self.home).ca_cert)
        env = {"STORAGE_EMULATOR_HOST": self.gcs_url, "TUNE2SERVE_VERTEX_API_ENDPOINT": self.api_endpoint,
               "REQUESTS_CA_BUNDLE": ca, "SSL_CERT_FILE": ca, "CURL_CA_BUNDLE": ca}  # curl reads only the last
        if self.config.monitoring_port:  # gRPC, TLS with the local CA (components/vertex/monitoring.py)
            env["TUNE2SERVE_MONITORING_API_ENDPOINT"] = f"127.0.0.1:{self.config.monitoring_port}"
        return env

    # -------------------------------------------------------------------- up
    def up(self, timeout: float = 60.0, replicas_timeout: float = 300.0, engine: str | None = None) -> dict[str, Any]:
        """Starts what is not running; returns {"started": [...], "bucket", "env", "engine"}.

        ``engine`` (vllm | transformers) is kept in stack.json for every replica started
        from then on; None keeps the stack's (vllm for a new stack). It is checked before
        anything starts: vLLM missing is a StackError saying how to install it."""
        from tune2serve.localstack.serving import check_engine, engine_version

        saved = StackConfig.load(self.home)
        check_engine(engine or (saved.engine if saved is not None else DEFAULT_ENGINE))  # before anything is made
        self.home.mkdir(parents=True, exist_ok=True)
        config = StackConfig.load(self.home)
        if config is None:
            ports = set()
            while len(ports) < 4:
                ports.add(free_port())
            gcs_port, vertex_port, dp_port, monitoring_port = sorted(ports)
            config = StackConfig(gcs_port, vertex_port, dp_port, monitoring_port)
            config.save(self.home)
        elif not config.monitoring_port:  # a stack made before it served Cloud Monitoring
            config.monitoring_port = free_port()
            config.save(self.home)
        if engine is not None and engine != config.engine:
            config.engine = engine
            config.save(self.home)
        tls.ensure_tls(self.home)
        started = []
        if not self._running("gcs"):
            root = self.home / "gcs"
            root.mkdir(parents=True, exist_ok=True)
            self._spawn("gcs", gcs.command(root, config.gcs_port), config.gcs_port)
            started.append("gcs")
            try:
                gcs.wait_ready(self.gcs_url, timeout=timeout)
            except (TimeoutError, RuntimeError) as e:
                raise StackError(f"fake-gcs-server did not start: {e}; see {self.home / 'logs' / 'gcs.log'}") from e
        self._ensure_bucket(config.bucket)
        if not self._running("vertex"):
            env = {**os.environ, **self.env(), "TUNE2SERVE_LOG_FORMAT": "json"}
            cmd = [sys.executable, "-m", "tune2serve.localstack.vertex_server", "--home", str(self.home)]
            self._spawn("vertex", cmd, config.vertex_port, env=env)
            started.append("vertex")
            self._wait_vertex(timeout)
        else:
            _get_json(f"{self.api_endpoint}/_local/repair", timeout=replicas_timeout, data=b"{}")
        self.wait_replicas(replicas_timeout)
        return {"started": started, "bucket": config.bucket, "env": self.env(), "home": str(self.home),
                "engine": f"{config.engine}/{engine_version(config.engine)}"}

    def _spawn(self, name: str, cmd: list[str], port: int, env: dict[str, str] | None = None) -> None:
        log_dir = self.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True, cwd=str(self.home))
        procs.write_pidfile(self.pidfile(name), procs.PidRecord.of(proc.pid, name, port))

    def _running(self, name: str) -> bool:
        record = procs.read_pidfile(self.pidfile(name))
        return record is not None and record.alive()

    def _wait_vertex(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._running("vertex"):
                break
            try:
                _get_json(f"{self.api_endpoint}/_local/health", timeout=1.0)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                time.sleep(0.1)
        raise StackError(f"the local Vertex server did not answer at {self.api_endpoint}; "
                         f"see {self.home / 'logs' / 'vertex.log'}")

    def _ensure_bucket(self, bucket: str) -> None:
        body = json.dumps({"name": bucket}).encode()
        try:
            _get_json(f"{self.gcs_url}/storage/v1/b?project={self.config.project}", data=body)
        except urllib.error.HTTPError as e:
            if e.code != 409:  # 409: it exists already
                raise StackError(f"cannot create bucket {bucket} on fake-gcs-server: HTTP {e.code}") from e

    def wait_replicas(self, timeout: float) -> None:
        """Waits until every deployed model has its wanted number of healthy replicas."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dms = [dm for e in self.status()["endpoints"] for dm in e.get("deployedModels", [])]
            if all(dm.get("status", {}).get("availableReplicaCount", 0) >= dm.get("wantedReplicas", 0)
                   for dm in dms):
                return
            time.sleep(0.5)
        raise StackError(f"model servers did not all become healthy within {timeout:.0f} s; "
                         f"see {self.home / 'logs'}/replica-*.log")

    # ------------------------------------------------------------------ down
    def down(self, timeout: float = 20.0) -> list[int]:
        """Stops the Vertex server (which stops its model servers), any model server a
        crashed server left behind, and fake-gcs-server. Returns the pids stopped."""
        stopped = []
        for name in ("vertex", "gcs"):
            record = procs.read_pidfile(self.pidfile(name))
            if record is not None:
                if procs.stop(record, timeout=timeout):
                    stopped.append(record.pid)
                self.pidfile(name).unlink(missing_ok=True)
            if name == "vertex":
                stopped += self._stop_replicas()
        return stopped

    def _stop_replicas(self) -> list[int]:
        stopped = []
        for path in sorted((self.home / "run" / "replicas").glob("*.json")):
            record = procs.read_pidfile(path)
            if record is not None and procs.stop(record, timeout=5.0):
                stopped.append(record.pid)
            path.unlink(missing_ok=True)
        return stopped

    def pids(self) -> list[int]:
        """Every live process of this stack (for checks that nothing is left)."""
        paths = [self.pidfile("vertex"), self.pidfile("gcs"), *(self.home / "run" / "replicas").glob("*.json")]
        records = [procs.read_pidfile(p) for p in paths]
        return [r.pid for r in records if r is not None and r.alive()]

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"home": str(self.home), "running": {n: self._running(n) for n in ("gcs", "vertex")},
                               "endpoints": [], "faults": []}
        config = StackConfig.load(self.home)
        if config is not None:  # the engine replicas start with now; each replica says its own
            out["engine"] = _engine_status(config.engine)
        if out["running"]["vertex"]:
            try:
                out.update(_get_json(f"{self.api_endpoint}/_local/status", timeout=5.0))
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                out["error"] = f"the Vertex server did not answer: {e}"
        return out
