"""The Vertex AI control plane of the local stack: Model Garden :deploy, endpoints,
models, operations, recommendSpec — the logic, independent of HTTP.

Long-running operations are really asynchronous: the request is checked and answered
at once with an Operation; a worker thread does the work (copy the model out of GCS,
start its model servers, wait for /health) and only then records the resources and
completes the operation. A failed operation records nothing: no half-made endpoint,
model or deployed model is ever visible.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tune2serve.components.logs import get_logger, log_event
from tune2serve.localstack import model_files, resources as res
from tune2serve.localstack.api_errors import ApiError, invalid, not_found, precondition
from tune2serve.localstack.endpoint_ops import EndpointOps, Outcome
from tune2serve.localstack.errors import ReplicaStartError
from tune2serve.localstack.faults import Fault, FaultBook
from tune2serve.localstack.serving import Supervisor
from tune2serve.localstack.state import (Deployment, StackConfig, StateStore, new_id,
                                              now_rfc3339)

_log = get_logger("local.control")
MAX_LOCAL_REPLICAS = 4
INJECTED_FAILURES = {
    "deploy-fails": "Deployment failed (injected fault deploy-fails): the model server did not start. "
                    "Retry the deployment or check the model files.",
    "undeploy-fails": "Undeploying the model failed (injected fault undeploy-fails): the deployed model is "
                      "still deployed. Retry the undeploy.",
}


class ControlPlane(EndpointOps):
    def __init__(self, home: Path, config: StackConfig, store: StateStore, supervisor: Supervisor,
                 faults: FaultBook) -> None:
        self.home, self.config, self.store = home, config, store
        self.supervisor, self.faults = supervisor, faults
        self.threads: list[threading.Thread] = []

    @property
    def dataplane_dns(self) -> str:
        return f"127.0.0.1:{self.config.dataplane_port}"

    # ----------------------------------------------------------------- operations
    def _start_operation(self, version: str, parent: str, metadata_type: str, metadata: dict[str, Any],
                         work: Callable[[], Outcome], fault_ids: set[str] | None = None,
                         fault_kind: str = "deploy-fails") -> dict[str, Any]:
        op_id = new_id()
        created = now_rfc3339()
        op = {
            "name": f"{parent}/operations/{op_id}", "version": version, "done": False,
            "metadata": {"type": metadata_type,
                         "payload": {**metadata, "genericMetadata": {"createTime": created, "updateTime": created}}},
        }
        self.store.put_operation(op_id, op)

        def run() -> None:
            try:
                if fault_ids is not None and self.faults.take_operation_failure(fault_kind, fault_ids):
                    raise ApiError("INTERNAL", INJECTED_FAILURES[fault_kind])
                outcome = work()
                done = {"response": {"type": outcome.type_name, "payload": outcome.payload}}
            except ApiError as e:
                done = {"error": e.rpc_status()}
            except Exception as e:  # the operation must end, whatever went wrong
                log_event(_log, "operation.crash", f"operation {op_id} failed: {e!r}", level=40)
                done = {"error": {"code": 13, "message": f"Internal error: {type(e).__name__}: {e}"}}
            with self.store.lock:
                final = self.store.operation(op_id) or op
                final.update(done, done=True)
                final["metadata"]["payload"]["genericMetadata"]["updateTime"] = now_rfc3339()
                self.store.put_operation(op_id, final)
            log_event(_log, "operation.done", f"operation {final['name']} done",
                      operation=final["name"], error=done.get("error"))

        t = threading.Thread(target=run, name=f"op-{op_id}", daemon=True)
        self.threads.append(t)
        t.start()
        return op

    def get_operation(self, name: str) -> dict[str, Any]:
        op = self.store.operation(name.rsplit("/", 1)[-1])
        if op is None or not op["name"].endswith(name.split("/operations/", 1)[-1]):
            raise not_found(f"Operation {name}")
        return op

    # -------------------------------------------------------------- model garden
    def deploy(self, version: str, parent: str, req: dict[str, Any]) -> dict[str, Any]:
        """Model Garden :deploy of custom weights (gcs_uri): registers a Model, makes a
        dedicated Endpoint and deploys the model on it, in one operation."""
        if req.get("destination") and req["destination"] != parent:
            raise invalid(f"destination {req['destination']!r} does not match the request path {parent!r}.")
        if req.get("publisherModelName") or req.get("huggingFaceModelId"):
            raise invalid("The local stack deploys custom weights only: set custom_model.gcs_uri.")
        gcs_uri = (req.get("customModel") or {}).get("gcsUri", "")
        if not gcs_uri:
            raise invalid("custom_model.gcs_uri is required.")
        files = model_files.check_gcs_folder(gcs_uri)
        model_cfg, ep_cfg, dep_cfg = req.get("modelConfig", {}), req.get("endpointConfig", {}), req.get("deployConfig", {})
        if ep_cfg.get("dedicatedEndpointDisabled"):
            raise invalid("The local stack serves dedicated endpoints only; do not set dedicated_endpoint_disabled.")
        resources = self._checked_resources(dep_cfg.get("dedicatedResources", {}))
        model_id = self._user_id(model_cfg.get("modelUserId"), self.store.state.models, "Model")
        endpoint_id = self._user_id(ep_cfg.get("endpointUserId"), self.store.state.endpoints, "Endpoint")
        _, project, _, region = parent.split("/")
        m_name = res.model_name(project, region, model_id)
        e_name = res.endpoint_name(project, region, endpoint_id)
        dm_id = new_id()
        base = gcs_uri.rstrip("/").rsplit("/", 1)[-1]
        model_display = model_cfg.get("modelDisplayName") or f"{base}-{model_id[-6:]}"
        endpoint_display = ep_cfg.get("endpointDisplayName") or f"{model_display}-mg-endpoint"
        labels = dict(dep_cfg.get("systemLabels", {}))

        def work() -> Outcome:
            model_dir = self._fetch(gcs_uri, model_id, files)
            try:
                self.supervisor.start(dm_id, model_dir, resources["minReplicaCount"])
            except ReplicaStartError as e:
                shutil.rmtree(model_dir, ignore_errors=True)
                raise ApiError("INTERNAL", f"Model server failed to start for {gcs_uri}: {e}") from e
            created = now_rfc3339()
            model = {"name": m_name, "displayName": model_display, "artifactUri": gcs_uri, "versionId": "1",
                     "versionAliases": ["default"], "labels": labels, "createTime": created, "updateTime": created,
                     "etag": new_id(),
                     "deployedModels": [{"endpoint": e_name, "deployedModelId": dm_id}]}
            endpoint: dict[str, Any] = {"name": e_name, "displayName": endpoint_display, "labels": labels,
                                        "trafficSplit": {dm_id: 100}, "createTime": created, "updateTime": created,
                                        "etag": new_id()}
            if ep_cfg.get("privateServiceConnectConfig"):
                endpoint["privateServiceConnectConfig"] = ep_cfg["privateServiceConnectConfig"]
            # Public dedicated (dedicatedEndpointDns) or PSC (a service attachment per deployed model).
            endpoint = res.endpoint_access(endpoint, self.dataplane_dns, dedicated=True)
            endpoint["deployedModels"] = [res.with_private_endpoint(
                res.deployed_model(dm_id, m_name, model_display, resources, created), endpoint)]
            with self.store.lock:
                self.store.state.models[model_id] = model
                self.store.state.endpoints[endpoint_id] = endpoint
                self.store.state.deployments[dm_id] = Deployment(endpoint_id, model_id, str(model_dir),
                                                                 resources["minReplicaCount"])
                self.store.save()
            return Outcome("DeployResponse", {"endpoint": e_name, "model": m_name})

        meta = {"destination": parent, "modelId": model_id}
        return self._start_operation(version, parent, "DeployOperationMetadata", meta, work, fault_ids={m_name})

    def _user_id(self, wanted: str | None, existing: dict[str, Any], kind: str) -> str:
        if not wanted:
            return new_id()
        if not res.USER_ID.match(wanted):
            raise invalid(f"{kind} id {wanted!r} is invalid: use 1-63 lowercase letters, digits or '-'.")
        if wanted in existing:
            raise ApiError("ALREADY_EXISTS", f"{kind} with id {wanted!r} already exists.")
        return wanted

    def _checked_resources(self, requested: dict[str, Any]) -> dict[str, Any]:
        out = res.dedicated_resources(requested)
        spec = out["machineSpec"] = res.machine_spec_without_defaults(out["machineSpec"])
        if ("acceleratorType" in spec) != ("acceleratorCount" in spec):
            raise invalid("machine_spec.accelerator_type and accelerator_count must be set together.")
        if out["minReplicaCount"] > MAX_LOCAL_REPLICAS:
            raise invalid(f"min_replica_count {out['minReplicaCount']} is above the local stack's limit of "
                          f"{MAX_LOCAL_REPLICAS} (each replica is a model server process on this machine).")
        return out

    def _fetch(self, gcs_uri: str, model_id: str, names: list[str]) -> Path:
        """Copies the model folder out of GCS into HOME/models/ID (atomically)."""
        from tune2serve.components.checkpoint.storage import open_folder
        from tune2serve.components.errors import PromotionError

        final = self.home / "models" / model_id
        partial = final.with_name(f".{model_id}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            folder = open_folder(gcs_uri)
            for name in names:
                target = partial / name
                target.parent.mkdir(parents=True, exist_ok=True)
                folder.fetch_to(name, target)
            model_files.check_local_folder(partial, gcs_uri)
        except PromotionError as e:
            shutil.rmtree(partial, ignore_errors=True)
            raise invalid(f"Cannot read the model at {gcs_uri}: {e}") from e
        except ApiError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        return final

    def recommend_spec(self, parent: str, req: dict[str, Any]) -> dict[str, Any]:
        gcs_uri = req.get("gcsUri", "")
        if not gcs_uri:
            raise invalid("gcs_uri is required.")
        weights = model_files.weights_bytes(gcs_uri)
        region = parent.split("/")[3]
        specs = res.recommend_specs(weights)
        return {
            "specs": [{"machineSpec": s} for s in specs],
            "recommendations": [{"region": region, "spec": {"machineSpec": s},
                                 "userQuotaState": "QUOTA_STATE_USER_HAS_QUOTA"} for s in specs],
        }

    # ------------------------------------------------------------------ faults
    def inject(self, fault: Fault) -> dict[str, Any]:
        if fault.kind == "kill-replica":
            targets = self.deployed_ids_for(fault.target)
            for dm_id in targets:
                pid = self.supervisor.kill_one(dm_id)
                if pid is not None:
                    return {"killed": {"deployedModelId": dm_id, "pid": pid}}
            raise precondition(f"No live replica to kill for target {fault.target or '(any)'}.")
        self.faults.add(fault)
        return {"faults": self.faults.list()}

    def deployed_ids_for(self, target: str | None) -> list[str]:
        """Deployed model ids a fault target names: an id, or a Model name (all its)."""
        with self.store.lock:
            deps = dict(self.store.state.deployments)
        if target is None:
            return sorted(deps)
        if target in deps:
            return [target]
        model_id = res.model_id_of(target)
        return sorted(d for d, dep in deps.items() if dep.model_id == model_id)
