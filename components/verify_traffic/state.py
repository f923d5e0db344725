"""An endpoint's state as verify-traffic needs it, parsed from the Endpoint resource
(the proto's ``to_dict`` form, snake_case) by pure functions.

Kept here, not in each caller, so the checks (split, replicas) and the rollback record
read the same fields the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DeployedModelState:
    id: str
    model: str
    display_name: str
    min_replica_count: int
    max_replica_count: int
    available_replica_count: int
    dedicated_resources: dict[str, Any]

    @property
    def model_id(self) -> str:
        """The Model's id (last segment of its resource name, version dropped)."""
        return self.model.rsplit("/", 1)[-1].split("@", 1)[0]

    @property
    def healthy(self) -> bool:
        return self.available_replica_count >= max(1, self.min_replica_count)


@dataclass(frozen=True)
class EndpointState:
    name: str
    deployed_models: tuple[DeployedModelState, ...]
    traffic_split: dict[str, int]
    labels: dict[str, str] = field(default_factory=dict)
    etag: str = ""
    dedicated_endpoint_dns: str = ""

    def deployed(self, deployed_model_id: str) -> DeployedModelState | None:
        return next((d for d in self.deployed_models if d.id == deployed_model_id), None)

    def deployed_ids(self) -> list[str]:
        return [d.id for d in self.deployed_models]

    def serving_split(self) -> dict[str, int]:
        """The split without zero shares."""
        return {k: v for k, v in sorted(self.traffic_split.items()) if v}

    def summary(self) -> dict[str, Any]:
        """What reports and --json print as "the endpoint's state"."""
        return {
            "endpoint": self.name,
            "traffic_split": self.serving_split(),
            "deployed_models": [
                {"id": d.id, "model": d.model, "available_replicas": d.available_replica_count,
                 "min_replicas": d.min_replica_count}
                for d in self.deployed_models
            ],
        }


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def parse_endpoint(data: Mapping[str, Any]) -> EndpointState:
    """An ``EndpointState`` from ``Endpoint.to_dict(proto)`` (snake_case keys)."""
    models = []
    for dm in data.get("deployed_models") or []:
        resources = dict(dm.get("dedicated_resources") or {})
        status = dm.get("status") or {}
        models.append(DeployedModelState(
            id=str(dm.get("id", "")),
            model=str(dm.get("model", "")),
            display_name=str(dm.get("display_name", "")),
            min_replica_count=_int(resources.get("min_replica_count")),
            max_replica_count=_int(resources.get("max_replica_count")),
            available_replica_count=_int(status.get("available_replica_count")),
            dedicated_resources=resources,
        ))
    return EndpointState(
        name=str(data.get("name", "")),
        deployed_models=tuple(models),
        traffic_split={str(k): _int(v) for k, v in (data.get("traffic_split") or {}).items()},
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        etag=str(data.get("etag", "") or ""),
        dedicated_endpoint_dns=str(data.get("dedicated_endpoint_dns", "") or ""),
    )


def copy_dedicated_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a deployment's ``dedicated_resources`` a new deployment copies: the
    machine spec (type, accelerator type and count) and the replica counts."""
    spec = resources.get("machine_spec") or {}
    machine_spec = {k: spec[k] for k in ("machine_type", "accelerator_type", "accelerator_count")
                    if spec.get(k) and spec[k] not in ("ACCELERATOR_TYPE_UNSPECIFIED", 0)}
    if "accelerator_type" not in machine_spec or "accelerator_count" not in machine_spec:
        machine_spec.pop("accelerator_type", None)  # set together or not at all
        machine_spec.pop("accelerator_count", None)
    out: dict[str, Any] = {"machine_spec": machine_spec,
                           "min_replica_count": max(1, _int(resources.get("min_replica_count")))}
    out["max_replica_count"] = max(out["min_replica_count"], _int(resources.get("max_replica_count")))
    return out
