"""Endpoint and Model operations of the local control plane: get/list/create/patch/
delete endpoints, deployModel/undeployModel/mutateDeployedModel, models get/list/delete.

Mixed into ``ControlPlane``; every check that can fail runs before the operation is
accepted, and again under the state lock when it commits.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tune2serve.localstack import resources as res
from tune2serve.localstack.api_errors import ApiError, invalid, not_found, precondition
from tune2serve.localstack.errors import ReplicaStartError
from tune2serve.localstack.state import Deployment, new_id, now_rfc3339

if TYPE_CHECKING:
    from tune2serve.localstack.faults import FaultBook
    from tune2serve.localstack.serving import Supervisor
    from tune2serve.localstack.state import StackConfig, StateStore


def check_etag(body: dict[str, Any], current: dict[str, Any], name: str) -> None:
    """A write that carries an etag is a compare-and-swap: refused (409 ABORTED, nothing
    changed) unless the resource still has that etag. No etag: a blind overwrite."""
    wanted = body.get("etag") or ""
    if wanted and wanted != current.get("etag", ""):
        raise ApiError("ABORTED", f"The etag {wanted!r} of the request does not match the current etag of {name}: "
                       "it changed since it was read. Read it again and retry.")


@dataclass
class Outcome:
    """What an operation's worker returns: the response type and payload."""

    type_name: str
    payload: dict[str, Any]


class EndpointOps:
    home: Path
    config: StackConfig
    store: StateStore
    supervisor: Supervisor
    faults: FaultBook
    dataplane_dns: str
    _start_operation: Callable[..., dict[str, Any]]

    # ------------------------------------------------------------------ reads
    def _endpoint(self, endpoint_id: str, name: str) -> dict[str, Any]:
        e = self.store.endpoint(endpoint_id)
        if e is None or e["name"] != name:
            raise not_found(f"Endpoint {name}")
        return e

    def live_endpoint(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        """The stored endpoint with each deployed model's live replica status."""
        out = copy.deepcopy(endpoint)
        for dm in out.get("deployedModels", []):
            available = self.supervisor.available(dm["id"])
            dm["status"] = {"availableReplicaCount": available, "lastUpdateTime": now_rfc3339(),
                            **({} if available else {"message": "No replica of this deployed model is healthy."})}
        return out

    def get_endpoint(self, endpoint_id: str, name: str) -> dict[str, Any]:
        return self.live_endpoint(self._endpoint(endpoint_id, name))

    def list_endpoints(self, parent: str, filter_text: str) -> list[dict[str, Any]]:
        clauses = res.parse_filter(filter_text)
        with self.store.lock:
            every = copy.deepcopy(list(self.store.state.endpoints.values()))
        return [self.live_endpoint(e) for e in every
                if e["name"].startswith(parent + "/") and res.matches(e, clauses)]

    def get_model(self, model_id: str, name: str) -> dict[str, Any]:
        m = self.store.model(res.model_id_of(model_id))
        if m is None or m["name"] != name.split("@", 1)[0]:
            raise not_found(f"Model {name}")
        return m

    def list_models(self, parent: str, filter_text: str) -> list[dict[str, Any]]:
        clauses = res.parse_filter(filter_text)
        with self.store.lock:
            every = copy.deepcopy(list(self.store.state.models.values()))
        return [m for m in every if m["name"].startswith(parent + "/") and res.matches(m, clauses)]

    # ----------------------------------------------------------- endpoint CRUD
    def create_endpoint(self, version: str, parent: str, body: dict[str, Any], endpoint_id: str | None) -> dict[str, Any]:
        if not body.get("displayName"):
            raise invalid("endpoint.display_name is required.")
        with self.store.lock:
            if endpoint_id and not res.USER_ID.match(endpoint_id):
                raise invalid(f"endpoint_id {endpoint_id!r} is invalid: use 1-63 lowercase letters, digits or '-'.")
            if endpoint_id and endpoint_id in self.store.state.endpoints:
                raise ApiError("ALREADY_EXISTS", f"Endpoint {parent}/endpoints/{endpoint_id} already exists.")
            eid = endpoint_id or new_id()
        created = now_rfc3339()
        endpoint = {k: v for k, v in body.items() if k in ("displayName", "description", "labels",
                                                          "privateServiceConnectConfig")}
        endpoint.update(name=f"{parent}/endpoints/{eid}", createTime=created, updateTime=created, etag=new_id())
        endpoint = res.endpoint_access(endpoint, self.dataplane_dns,
                                       dedicated=bool(body.get("dedicatedEndpointEnabled", True)))

        def work() -> Outcome:
            with self.store.lock:
                self.store.state.endpoints[eid] = endpoint
                self.store.save()
            return Outcome("Endpoint", endpoint)

        return self._start_operation(version, parent, "CreateEndpointOperationMetadata", {}, work)

    def patch_endpoint(self, endpoint_id: str, name: str, body: dict[str, Any], mask: list[str]) -> dict[str, Any]:
        allowed = {"display_name": "displayName", "description": "description", "labels": "labels",
                   "traffic_split": "trafficSplit", "displayName": "displayName", "trafficSplit": "trafficSplit"}
        if not mask:
            raise invalid("update_mask is required; for example update_mask=traffic_split.")
        bad = [m for m in mask if m not in allowed]
        if bad:
            raise invalid(f"update_mask names fields that cannot be updated here: {', '.join(bad)}; "
                          "allowed: display_name, description, labels, traffic_split.")
        if "labels" in body and any(allowed[m] == "labels" for m in mask):
            res.check_labels(body["labels"])
        with self.store.lock:
            e = self._endpoint(endpoint_id, name)
            check_etag(body, e, name)
            for m in mask:
                key = allowed[m]
                if key == "trafficSplit":
                    ids = {dm["id"] for dm in e.get("deployedModels", [])}
                    e[key] = res.check_split({k: int(v) for k, v in body.get(key, {}).items()}, ids)
                    if ids and not e[key]:
                        raise invalid("traffic_split must not be empty while models are deployed.")
                elif key in body:
                    e[key] = body[key]
                else:
                    e.pop(key, None)
            e["updateTime"], e["etag"] = now_rfc3339(), new_id()
            self.store.state.endpoints[endpoint_id] = e
            self.store.save()
        return self.live_endpoint(e)

    def delete_endpoint(self, version: str, endpoint_id: str, name: str) -> dict[str, Any]:
        e = self._endpoint(endpoint_id, name)
        if e.get("deployedModels"):
            raise precondition(f"Endpoint {name} has deployed models; undeploy them first.")

        def work() -> Outcome:
            with self.store.lock:
                cur = self.store.state.endpoints.get(endpoint_id)
                if cur and cur.get("deployedModels"):
                    raise precondition(f"Endpoint {name} has deployed models; undeploy them first.")
                self.store.state.endpoints.pop(endpoint_id, None)
                self.store.save()
            return Outcome("Empty", {})

        return self._start_operation(version, name.rsplit("/endpoints/", 1)[0], "DeleteOperationMetadata", {}, work)

    # ------------------------------------------------------------ deployModel
    def deploy_model(self, version: str, endpoint_id: str, name: str, req: dict[str, Any]) -> dict[str, Any]:
        e = self._endpoint(endpoint_id, name)
        dm_req = req.get("deployedModel") or {}
        model_ref = dm_req.get("model", "")
        if not model_ref:
            raise invalid("deployed_model.model is required.")
        model_id = res.model_id_of(model_ref)
        model = self.store.model(model_id)
        if model is None or model["name"] != model_ref.split("@", 1)[0]:
            raise not_found(f"Model {model_ref}")
        model_dir = self.home / "models" / model_id
        if not model_dir.is_dir():
            raise precondition(f"Model {model_ref} has no local copy of its files; deploy it again with :deploy.")
        resources = self._checked_resources(dm_req.get("dedicatedResources")
                                            or {"minReplicaCount": (dm_req.get("automaticResources") or {}).get("minReplicaCount", 1)})
        dm_id = dm_req.get("id") or new_id()
        existing = {dm["id"] for dm in e.get("deployedModels", [])}
        if dm_id in existing:
            raise ApiError("ALREADY_EXISTS", f"Deployed model {dm_id} already exists on {name}.")
        requested = {k: int(v) for k, v in (req.get("trafficSplit") or {}).items()}
        res.split_for_deploy(e.get("trafficSplit", {}), requested, dm_id, existing)  # checked now
        display = dm_req.get("displayName") or model["displayName"]

        def work() -> Outcome:
            try:
                self.supervisor.start(dm_id, model_dir, resources["minReplicaCount"])
            except ReplicaStartError as err:
                raise ApiError("INTERNAL", f"Model server failed to start for {model_ref}: {err}") from err
            try:
                with self.store.lock:
                    cur = self._endpoint(endpoint_id, name)
                    ids = {dm["id"] for dm in cur.get("deployedModels", [])}
                    cur["trafficSplit"] = res.split_for_deploy(cur.get("trafficSplit", {}), requested, dm_id, ids)
                    dm = res.with_private_endpoint(
                        res.deployed_model(dm_id, model["name"], display, resources, now_rfc3339()), cur)
                    cur.setdefault("deployedModels", []).append(dm)
                    cur["updateTime"], cur["etag"] = now_rfc3339(), new_id()
                    m = self.store.state.models[model_id]
                    m.setdefault("deployedModels", []).append({"endpoint": name, "deployedModelId": dm_id})
                    self.store.state.endpoints[endpoint_id] = cur
                    self.store.state.deployments[dm_id] = Deployment(endpoint_id, model_id, str(model_dir),
                                                                     resources["minReplicaCount"])
                    self.store.save()
            except ApiError:
                self.supervisor.stop(dm_id)
                raise
            return Outcome("DeployModelResponse", {"deployedModel": dm})

        return self._start_operation(version, name, "DeployModelOperationMetadata", {}, work,
                                     fault_ids={model["name"], dm_id})

    def undeploy_model(self, version: str, endpoint_id: str, name: str, req: dict[str, Any]) -> dict[str, Any]:
        e = self._endpoint(endpoint_id, name)
        dm_id = req.get("deployedModelId", "")
        ids = {dm["id"] for dm in e.get("deployedModels", [])}
        if dm_id not in ids:
            raise not_found(f"Deployed model {dm_id!r} on endpoint {name}")
        requested = {k: int(v) for k, v in (req.get("trafficSplit") or {}).items()}
        res.split_for_undeploy(e.get("trafficSplit", {}), requested, dm_id, ids - {dm_id})

        def work() -> Outcome:
            with self.store.lock:
                cur = self._endpoint(endpoint_id, name)
                ids_now = {dm["id"] for dm in cur.get("deployedModels", [])}
                if dm_id not in ids_now:
                    raise not_found(f"Deployed model {dm_id!r} on endpoint {name}")
                cur["trafficSplit"] = res.split_for_undeploy(cur.get("trafficSplit", {}), requested, dm_id,
                                                             ids_now - {dm_id})
                cur["deployedModels"] = [dm for dm in cur["deployedModels"] if dm["id"] != dm_id]
                cur["updateTime"], cur["etag"] = now_rfc3339(), new_id()
                dep = self.store.state.deployments.pop(dm_id, None)
                if dep and dep.model_id in self.store.state.models:
                    m = self.store.state.models[dep.model_id]
                    m["deployedModels"] = [r for r in m.get("deployedModels", []) if r.get("deployedModelId") != dm_id]
                self.store.state.endpoints[endpoint_id] = cur
                self.store.save()
            self.supervisor.stop(dm_id)
            return Outcome("UndeployModelResponse", {})

        model = next(dm["model"] for dm in e["deployedModels"] if dm["id"] == dm_id)
        return self._start_operation(version, name, "UndeployModelOperationMetadata", {}, work,
                                     fault_ids={model, dm_id}, fault_kind="undeploy-fails")

    def mutate_deployed_model(self, version: str, endpoint_id: str, name: str, req: dict[str, Any],
                              mask: list[str]) -> dict[str, Any]:
        e = self._endpoint(endpoint_id, name)
        dm_req = req.get("deployedModel") or {}
        current = next((dm for dm in e.get("deployedModels", []) if dm["id"] == dm_req.get("id")), None)
        if current is None:
            raise not_found(f"Deployed model {dm_req.get('id')!r} on endpoint {name}")
        allowed = {"dedicated_resources.min_replica_count": "minReplicaCount",
                   "dedicated_resources.max_replica_count": "maxReplicaCount"}
        if not mask or any(m not in allowed for m in mask):
            raise invalid(f"update_mask must name some of: {', '.join(allowed)}; got {mask}.")
        wanted = dict(current["dedicatedResources"])
        for m in mask:
            wanted[allowed[m]] = int((dm_req.get("dedicatedResources") or {}).get(allowed[m], 0))
        wanted = self._checked_resources(wanted)
        dm_id = current["id"]

        def work() -> Outcome:
            dep = self.store.state.deployments[dm_id]
            try:
                self.supervisor.scale(dm_id, Path(dep.model_dir), wanted["minReplicaCount"])
            except ReplicaStartError as err:
                raise ApiError("INTERNAL", f"Could not start replicas for deployed model {dm_id}: {err}") from err
            with self.store.lock:
                cur = self._endpoint(endpoint_id, name)
                for dm in cur["deployedModels"]:
                    if dm["id"] == dm_id:
                        dm["dedicatedResources"] = wanted
                        result = dm
                dep.replicas = wanted["minReplicaCount"]
                self.store.state.endpoints[endpoint_id] = cur
                self.store.save()
            return Outcome("MutateDeployedModelResponse", {"deployedModel": result})

        return self._start_operation(version, name, "MutateDeployedModelOperationMetadata", {}, work)

    # ------------------------------------------------------------------ models
    def patch_model(self, model_id: str, name: str, body: dict[str, Any], mask: list[str]) -> dict[str, Any]:
        """UpdateModel: display_name, description and labels, by update_mask, honouring
        the etag when the request carries one."""
        allowed = {"display_name": "displayName", "displayName": "displayName", "description": "description",
                   "labels": "labels"}
        if not mask:
            raise invalid("update_mask is required; for example update_mask=labels.")
        bad = [m for m in mask if m not in allowed]
        if bad:
            raise invalid(f"update_mask names fields that cannot be updated here: {', '.join(bad)}; "
                          "allowed: display_name, description, labels.")
        keys = {allowed[m] for m in mask}
        if "displayName" in keys and not body.get("displayName"):
            raise invalid("model.display_name must not be empty.")
        if "labels" in keys:
            res.check_labels(body.get("labels") or {})
        with self.store.lock:
            m = self.get_model(model_id, name)
            check_etag(body, m, m["name"])
            for key in keys:
                if body.get(key):
                    m[key] = body[key]
                else:
                    m.pop(key, None)
            m["updateTime"], m["etag"] = now_rfc3339(), new_id()
            self.store.state.models[res.model_id_of(model_id)] = m
            self.store.save()
        return m

    def delete_model(self, version: str, model_id: str, name: str) -> dict[str, Any]:
        m = self.get_model(model_id, name)
        if m.get("deployedModels"):
            raise precondition(f"Model {name} is deployed on "
                               f"{', '.join(r['endpoint'] for r in m['deployedModels'])}; undeploy it first.")

        def work() -> Outcome:
            with self.store.lock:
                self.store.state.models.pop(model_id, None)
                self.store.save()
            shutil.rmtree(self.home / "models" / model_id, ignore_errors=True)
            return Outcome("Empty", {})

        return self._start_operation(version, name.rsplit("/models/", 1)[0], "DeleteOperationMetadata", {}, work)

    # ------------------------------------------------------- restart and repair
    def restore_replicas(self) -> None:
        """Starts the replicas of every deployed model (after ``up``), or restarts the
        ones that died; errors are logged, the replica counts show what runs."""
        with self.store.lock:
            deps = dict(self.store.state.deployments)
        for dm_id, dep in deps.items():
            try:
                self.supervisor.repair(dm_id, Path(dep.model_dir), dep.replicas)
            except ReplicaStartError:
                continue

    _checked_resources: Callable[[dict[str, Any]], dict[str, Any]]
