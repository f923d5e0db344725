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

    @property
    def model_id(self) -> str:
        """The Model's id (last segment of its resource name, version dropped)."""
        return self.model.rsplit("/", 1)[-1].split("@", 1)[0]

    @property
    def healthy(self) -> bool:
        """At least minReplicaCount (and at least one) replicas are available."""
        return self.available_replica_count >= max(1, self.min_replica_count)

    def dedicated_resources(self) -> dict[str, Any]:
        """This deployment's machine spec and replica counts as a deployModel request's
        ``dedicated_resources`` (accelerator type and count set together or not at all)."""
        spec: dict[str, Any] = {"machine_type": self.machine_type} if self.machine_type else {}
        if self.accelerator_type and self.accelerator_count:
            spec.update(accelerator_type=self.accelerator_type, accelerator_count=self.accelerator_count)
        low = max(1, self.min_replica_count)
        return {"machine_spec": spec, "min_replica_count": low, "max_replica_count": max(low, self.max_replica_count)}


@dataclass(frozen=True)
class EndpointState:
    name: str
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    deployed_models: tuple[DeployedModelState, ...] = ()
    traffic_split: dict[str, int] = field(default_factory=dict)
    dedicated_endpoint_dns: str = ""
    private_service_connect: bool = False
    etag: str = ""

    @property
    def id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def deployed_model(self, deployed_model_id: str) -> DeployedModelState | None:
        return next((d for d in self.deployed_models if d.id == deployed_model_id), None)

    def deployed_ids(self) -> list[str]:
        return [d.id for d in self.deployed_models]

    def serving_split(self) -> dict[str, int]:
        """The traffic split without zero shares, keys sorted."""
        return {k: v for k, v in sorted(self.traffic_split.items()) if v}

    def summary(self) -> dict[str, Any]:
        """What reports and --json print as "the endpoint's state"."""
        return {
            "endpoint": self.name,
            "traffic_split": self.serving_split(),
            "deployed_models": [{"id": d.id, "model": d.model, "available_replicas": d.available_replica_count,
                                 "min_replicas": d.min_replica_count} for d in self.deployed_models],
        }


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
        etag=str(getattr(resource, "etag", "") or ""),
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
    """The SDK's ``aiplatform.Endpoint`` for ``name`` (fetched now: the SDK reads lazily)."""
    from google.cloud import aiplatform

    init_sdk(vertex)
    try:
        endpoint = aiplatform.Endpoint(endpoint_name=name, project=vertex.project, location=vertex.region)
        endpoint.gca_resource  # noqa: B018 — the read happens here, inside the translation
    except Exception as e:
        raise translate_api_error(e, resource_name=name) from e
    return endpoint


def gapic_client(vertex: VertexTarget, kind: str = "endpoints") -> Any:
    """The SDK's own GAPIC client (``"endpoints"`` or ``"models"``) for the target: what
    ``aiplatform.Endpoint`` uses underneath, without its stdout progress lines."""
    from google.cloud.aiplatform import initializer, utils

    init_sdk(vertex)
    client_class = utils.EndpointClientWithOverride if kind == "endpoints" else utils.ModelClientWithOverride
    return initializer.global_config.create_client(client_class=client_class, location_override=vertex.region)


def get_endpoint(vertex: VertexTarget, name: str, client: Any = None) -> EndpointState:
    """The endpoint's state, read now (retried on 429/5xx with the one retry policy)."""
    from tune2serve.components.errors import VertexError
    from tune2serve.components.vertex.retry import call_with_retry

    client = client or gapic_client(vertex)

    def once() -> EndpointState:
        try:
            return endpoint_state_from_resource(client.get_endpoint(name=name))
        except VertexError:
            raise
        except Exception as e:
            raise translate_api_error(e, resource_name=name) from e

    return call_with_retry(once, what=f"read {name}")


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
