"""Simulated routing draws for the pure decision code (no network): an endpoint state and
answers as the data plane would give them when it really routes ``true_share``."""

from __future__ import annotations

import numpy as np

from tune2serve.components.verify_traffic.probe import Answer
from tune2serve.components.vertex.endpoints import DeployedModelState, EndpointState

OLD, NEW = "111", "222"


def endpoint_state(split: dict[str, int], available: int = 1) -> EndpointState:
    return EndpointState(
        name="projects/p/locations/l/endpoints/9",
        traffic_split=dict(split),
        dedicated_endpoint_dns="127.0.0.1:1",
        deployed_models=tuple(
            DeployedModelState(id=i, model=f"projects/p/locations/l/models/m{i}", min_replica_count=1,
                               max_replica_count=1, available_replica_count=available)
            for i in split),
    )


def routed(n: int, true_share: float, seed: int, *, new_error_rate: float = 0.0,
           new_latency_ms: float = 20.0, old_latency_ms: float = 20.0) -> list[Answer]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if rng.random() < true_share:
            ok = rng.random() >= new_error_rate
            out.append(Answer(NEW, ok, 200 if ok else 503, float(rng.normal(new_latency_ms, 2))))
        else:
            out.append(Answer(OLD, True, 200, float(rng.normal(old_latency_ms, 2))))
    return out
