"""Reading (and, for clean-up, deleting) Vertex AI endpoints through the SDK.

The steps need the same few facts about an endpoint — its deployed models, traffic
split, available replicas, dedicated DNS, labels — so they are read here once into a
plain frozen ``EndpointState`` (pure conversion from the resource proto, testable
without a server) instead of every step poking at ``aiplatform.Endpoint`` internals.
Every SDK error goes through ``translate_api_error``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.vertex.clients import VertexTarget, init_sdk
from tune2serve.components.vertex.errors import translate_api_error


@dataclass(frozen=True)
class DeployedModelState:
    id: str
    model: str
    display_name: str = ""
    machine_type: str = ""
    accelerator_type: str = ""
    accelerator_count: int = 0
    min_replica_count: int = 0
    max_replica_count: int = 0
    available_replica_count: int = 0


@dataclass(frozen=True)
class EndpointState:
    name: str
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    deployed_models: tuple[DeployedModelState, ...] = ()
    traffic_split: dict[str, int] = field(default_factory=dict)
    dedicated_endpoint_dns: str = ""
    private_service_connect: bool = False

    @property
    def id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def deployed_model(self, deployed_model_id: str) -> DeployedModelState | None:
        return next((d for d in self.deployed_models if d.id == deployed_model_id), None)


def _enum_name(value: Any) -> str:
    name = getattr(value, "name", None)
    if name is not None:
        return "" if name.endswith("UNSPECIFIED") else str(name)
    return str(value or "")


def endpoint_state_from_resource(resource: Any) -> EndpointState:
    """Converts a ``google.cloud.aiplatform_v1(beta1).types.Endpoint`` into our value."""
    deployed = []
    for dm in resource.deployed_models:
        res = dm.dedicated_resources
        spec = res.machine_spec
        deployed.append(DeployedModelState(
            id=str(dm.id),
            model=str(dm.model),
            display_name=str(dm.display_name),
            machine_type=str(spec.machine_type),
            accelerator_type=_enum_name(spec.accelerator_type),
            accelerator_count=int(spec.accelerator_count),
            min_replica_count=int(res.min_replica_count),
            max_replica_count=int(res.max_replica_count),
            available_replica_count=int(dm.status.available_replica_count),
        ))
    psc = getattr(resource, "private_service_connect_config", None)
    return EndpointState(
        name=str(resource.name),
        display_name=str(resource.display_name),
        labels=dict(resource.labels),
        deployed_models=tuple(deployed),
        traffic_split={str(k): int(v) for k, v in dict(resource.traffic_split).items()},
        dedicated_endpoint_dns=str(getattr(resource, "dedicated_endpoint_dns", "") or ""),
        private_service_connect=bool(psc and psc.enable_private_service_connect),
    )


def label_filter(labels: dict[str, str]) -> str:
    """A Vertex list filter matching every label, e.g. ``labels.a="1" AND labels.b="2"``."""
    return " AND ".join(f'labels.{k}="{v}"' for k, v in sorted(labels.items()))


@contextlib.contextmanager
def quiet_sdk() -> Iterator[None]:
    """The SDK logs its progress lines to *stdout*, which would break ``--json``; our own
    log events (stderr) say the same, so its INFO lines are muted while it works."""
    logger = logging.getLogger("google.cloud.aiplatform")
    loggers = [logger] + [lg for n, lg in logging.Logger.manager.loggerDict.items()
                          if n.startswith("google.cloud.aiplatform.") and isinstance(lg, logging.Logger)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def sdk_endpoint(vertex: VertexTarget, name: str) -> Any:
    """The SDK's ``aiplatform.Endpoint`` for ``name`` (fetched now)."""
    from google.cloud import aiplatform

    init_sdk(vertex)
    try:
        return aiplatform.Endpoint(endpoint_name=name, project=vertex.project, location=vertex.region)
    except Exception as e:
        raise translate_api_error(e, resource_name=name) from e


def get_endpoint(vertex: VertexTarget, name: str) -> EndpointState:
    return endpoint_state_from_resource(sdk_endpoint(vertex, name).gca_resource)


def list_endpoints(vertex: VertexTarget, labels: dict[str, str]) -> list[EndpointState]:
    """Endpoints carrying every one of ``labels``, oldest first."""
    from google.cloud import aiplatform

    init_sdk(vertex)
    try:
        found = aiplatform.Endpoint.list(filter=label_filter(labels), order_by="create_time",
                                         project=vertex.project, location=vertex.region)
    except Exception as e:
        raise translate_api_error(e, resource_name=f"{vertex.parent}/endpoints") from e
    states = [endpoint_state_from_resource(ep.gca_resource) for ep in found]
    # A server that ignores the filter must not make us adopt a stranger's endpoint.
    return [s for s in states if all(s.labels.get(k) == v for k, v in labels.items())]


def delete_endpoint(vertex: VertexTarget, name: str, *, force: bool = False) -> None:
    """Deletes ``name`` (with ``force``, undeploying its models first). Gone already is fine."""
    from google.api_core import exceptions as gexc

    try:
        with quiet_sdk():
            sdk_endpoint(vertex, name).delete(force=force, sync=True)
    except gexc.NotFound:
        return
    except Exception as e:
        from tune2serve.components.errors import VertexUserError

        if isinstance(e, VertexUserError) and e.status_code == 404:
            return
        raise translate_api_error(e, resource_name=name) from e


def update_endpoint_labels(vertex: VertexTarget, name: str, labels: dict[str, str]) -> None:
    """Merges ``labels`` into the endpoint's labels."""
    endpoint = sdk_endpoint(vertex, name)
    try:
        with quiet_sdk():
            endpoint.update(labels={**dict(endpoint.gca_resource.labels), **labels})
    except Exception as e:
        raise translate_api_error(e, resource_name=name) from e
