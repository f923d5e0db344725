"""The local stack's on-disk state: stack settings, resources and operations.

Two JSON files under the stack's home, each written atomically (temp file + rename):
- ``stack.json``: the ports chosen at the first ``up`` (kept, so ``local env`` is stable),
  the default project, region and bucket, the model-server engine;
- ``state.json``: endpoints, models and operations as Vertex JSON (v1beta1 field names),
  plus each deployed model's local serving facts (model folder, replica count).
Replica processes are runtime facts and live in pid files under ``run/``, not here.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PROJECT = "local-project"
DEFAULT_REGION = "us-central1"
DEFAULT_BUCKET = "tune2serve-local"
# The model-server engines (localstack/serving.py): vLLM, the engine behind custom-weights
# endpoints, by default; ``transformers serve`` as the quick engine.
ENGINES = ("vllm", "transformers")
DEFAULT_ENGINE = "vllm"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def new_id() -> str:
    """A numeric id like Vertex's (19 digits, no leading zero)."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


@dataclass
class StackConfig:
    """What ``up`` decided once and keeps: ports, defaults, the model-server engine."""

    gcs_port: int
    vertex_port: int
    dataplane_port: int
    monitoring_port: int = 0  # Cloud Monitoring's gRPC API (0: a stack.json from before it existed)
    project: str = DEFAULT_PROJECT
    region: str = DEFAULT_REGION
    bucket: str = DEFAULT_BUCKET
    engine: str = DEFAULT_ENGINE  # replicas started from now on use it (`local up --engine`)

    @classmethod
    def load(cls, home: Path) -> StackConfig | None:
        path = home / "stack.json"
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, home: Path) -> None:
        write_json_atomic(home / "stack.json", asdict(self))


@dataclass
class Deployment:
    """Local serving facts of one deployed model."""

    endpoint_id: str
    model_id: str
    model_dir: str
    replicas: int


@dataclass
class State:
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, Deployment] = field(default_factory=dict)


class StateStore:
    """The state in memory, guarded by one lock and saved after every change.

    Callers use ``with store.lock:`` around read-modify-``save()`` sequences; readers get
    deep copies so a response being written never sees a half-made change.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / "state.json"
        self.lock = threading.RLock()
        self.state = self._load()

    def _load(self) -> State:
        if not self.path.is_file():
            return State()
        raw = json.loads(self.path.read_text())
        return State(
            endpoints=raw.get("endpoints", {}),
            models=raw.get("models", {}),
            operations=raw.get("operations", {}),
            deployments={k: Deployment(**v) for k, v in raw.get("deployments", {}).items()},
        )

    def save(self) -> None:
        with self.lock:
            s = self.state
            write_json_atomic(self.path, {
                "endpoints": s.endpoints,
                "models": s.models,
                "operations": s.operations,
                "deployments": {k: asdict(v) for k, v in s.deployments.items()},
            })

    def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        with self.lock:
            e = self.state.endpoints.get(endpoint_id)
            return copy.deepcopy(e) if e is not None else None

    def model(self, model_id: str) -> dict[str, Any] | None:
        with self.lock:
            m = self.state.models.get(model_id)
            return copy.deepcopy(m) if m is not None else None

    def operation(self, op_id: str) -> dict[str, Any] | None:
        with self.lock:
            o = self.state.operations.get(op_id)
            return copy.deepcopy(o) if o is not None else None

    def put_operation(self, op_id: str, op: dict[str, Any]) -> None:
        with self.lock:
            self.state.operations[op_id] = op
            self.save()
