"""The endpoint calls verify-traffic makes, through the real SDK's GAPIC clients (REST
transport and anonymous credentials on the local stack, ADC in the cloud).

Every call goes through the one error translator; reads and blind-idempotent writes are
retried with the one retry policy; long-running operations are waited on with
``components/vertex/operations.wait_for_operation`` (name logged first, deadline).
deployModel is not retried blindly: a failed deploy fails the step, which rolls back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from tune2serve.components.errors import VertexError, VertexUserError
from tune2serve.components.vertex import endpoints as vendpoints
from tune2serve.components.vertex.clients import VertexTarget
from tune2serve.components.vertex.endpoints import EndpointState, endpoint_state_from_resource
from tune2serve.components.vertex.errors import translate_api_error
from tune2serve.components.vertex.operations import wait_for_operation
from tune2serve.components.vertex.retry import call_with_retry

T = TypeVar("T")
DEFAULT_DEPLOY_TIMEOUT_S = 1800.0
DEFAULT_UNDEPLOY_TIMEOUT_S = 600.0


def build_deployed_model(model: str, dedicated_resources: Mapping[str, Any], display_name: str) -> dict[str, Any]:
    """The ``DeployedModel`` of a deployModel request (a dict the proto accepts)."""
    return {"model": model, "display_name": display_name, "dedicated_resources": dict(dedicated_resources)}


def is_etag_conflict(error: VertexError) -> bool:
    """An update refused because the etag no longer matches (someone else wrote first)."""
    return error.status_code in (409, 412) or (error.status_code == 400 and "etag" in str(error).lower())


class EndpointApi:
    """Thin, typed calls on endpoints and models of one project/region. Reading an
    endpoint and listing/deleting endpoints are ``components/vertex/endpoints``'s; this
    adds the writes a promotion makes (etag-guarded labels, traffic split, deployModel,
    undeployModel) on the same GAPIC clients."""

    def __init__(self, vertex: VertexTarget) -> None:
        self.vertex = vertex
        self._clients: dict[str, Any] = {}

    # -- clients (made lazily: no network or credentials in the constructor) --------------
    def _client(self, kind: str) -> Any:
        if kind not in self._clients:
            self._clients[kind] = vendpoints.gapic_client(self.vertex, kind)
        return self._clients[kind]

    def _call(self, fn: Callable[[], T], *, what: str, resource: str, retry: bool = True) -> T:
        def once() -> T:
            try:
                return fn()
            except VertexError:
                raise
            except Exception as e:  # google.api_core errors and transport errors
                raise translate_api_error(e, resource_name=resource) from e

        return call_with_retry(once, what=what) if retry else once()

    # -- reads ----------------------------------------------------------------------------
    def get_endpoint(self, name: str) -> EndpointState:
        return vendpoints.get_endpoint(self.vertex, name, client=self._client("endpoints"))

    def get_model(self, name: str) -> dict[str, Any]:
        from google.cloud.aiplatform_v1.types import Model

        proto = self._call(lambda: self._client("models").get_model(name=name), what="get model", resource=name)
        return dict(Model.to_dict(proto, use_integers_for_enums=False))

    # -- writes ---------------------------------------------------------------------------
    def update_labels(self, name: str, labels: Mapping[str, str], etag: str) -> EndpointState:
        """Replaces the endpoint's labels if its etag is still ``etag`` (compare-and-swap).
        Not retried: on a conflict the caller re-reads and decides again."""
        from google.cloud.aiplatform_v1.types import Endpoint
        from google.protobuf.field_mask_pb2 import FieldMask

        body = Endpoint(name=name, labels=dict(labels), etag=etag)
        proto = self._call(lambda: self._client("endpoints").update_endpoint(
            endpoint=body, update_mask=FieldMask(paths=["labels"])), what="update labels", resource=name, retry=False)
        return endpoint_state_from_resource(proto)

    def set_traffic_split(self, name: str, split: Mapping[str, int], etag: str = "") -> EndpointState:
        """Sets the split; with ``etag``, only if the endpoint still has it (compare-and-swap:
        a conflict means someone changed the endpoint since the caller read it)."""
        from google.cloud.aiplatform_v1.types import Endpoint
        from google.protobuf.field_mask_pb2 import FieldMask

        body = Endpoint(name=name, traffic_split=dict(split), etag=etag)
        proto = self._call(lambda: self._client("endpoints").update_endpoint(
            endpoint=body, update_mask=FieldMask(paths=["traffic_split"])), what="set traffic split", resource=name)
        return endpoint_state_from_resource(proto)

    def deploy_model(self, endpoint: str, deployed_model: Mapping[str, Any], split: Mapping[str, int], *,
                     deadline_s: float = DEFAULT_DEPLOY_TIMEOUT_S) -> str:
        """deployModel with a traffic split (the new model keyed "0"); returns its deployed id."""
        operation = self._call(lambda: self._client("endpoints").deploy_model(
            endpoint=endpoint, deployed_model=dict(deployed_model), traffic_split=dict(split)),
            what="deploy model", resource=endpoint, retry=False)
        result = wait_for_operation(operation, what=f"deploy {deployed_model.get('model')} onto {endpoint}",
                                    deadline_s=deadline_s)
        deployed_id = str(getattr(getattr(result, "deployed_model", None), "id", "") or "")
        if not deployed_id:
            raise VertexUserError(f"{endpoint}: deployModel finished without a deployed model id", resource_name=endpoint)
        return deployed_id

    def undeploy_model(self, endpoint: str, deployed_model_id: str, split: Mapping[str, int], *,
                       deadline_s: float = DEFAULT_UNDEPLOY_TIMEOUT_S) -> None:
        operation = self._call(lambda: self._client("endpoints").undeploy_model(
            endpoint=endpoint, deployed_model_id=deployed_model_id, traffic_split=dict(split)),
            what="undeploy model", resource=endpoint)
        wait_for_operation(operation, what=f"undeploy {deployed_model_id} from {endpoint}", deadline_s=deadline_s)

    def delete_model(self, name: str, *, deadline_s: float = DEFAULT_UNDEPLOY_TIMEOUT_S) -> None:
        operation = self._call(lambda: self._client("models").delete_model(name=name),
                               what="delete model", resource=name)
        wait_for_operation(operation, what=f"delete {name}", deadline_s=deadline_s)
