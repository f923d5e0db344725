"""Deploy an export to a Vertex AI endpoint (custom weights), idempotently.

The plan, in order, with why:
1. Preflight the folder (exists, matches its manifest if it has one, valid): refuse
   before any Vertex call. Any folder that validates is deployable; its identity is the
   manifest's digest, or for a folder not exported by tune2serve the digest of its GCS
   object listing (``checkpoint/identity.py``). In the pipeline, validate's result is
   reused when it identifies exactly these files (and the same machine spec) instead of
   validating them a second time; from the CLI the folder is always validated here.
2. Look for what an earlier run made for the same export (``existing.find``): by the
   deterministic ids first, then by labels. Reuse a healthy deployment (completing its
   labels) instead of making a second endpoint; delete an endpoint left with no deployed
   model (a run that failed half-way), so nothing is duplicated or orphaned.
3. Pick the machine spec: the one given, else Vertex's recommendation (recommendSpec),
   the first that holds validate's memory estimate; none does: refuse, naming the
   smallest spec that fits.
4. Send ``:deploy`` through the SDK's Model Garden client, write the operation name
   down, wait with a deadline; on failure delete the endpoint it left behind. A 429
   (quota) is retried a few times, then reported as the quota problem it is.
5. Label the Model and the Endpoint (``:deploy`` cannot), read the deployed model id and
   the dedicated DNS, return them.

Resource ids (why a rerun cannot make a second endpoint): ``:deploy`` is asked for
``endpoint_config.endpoint_user_id`` and ``model_config.model_user_id`` both equal to
``t2s-<first 16 hex of the identity digest>-<first 16 hex of sha256(export URI)>``
(``request.deployment_ids``: 37 characters of ``[a-z0-9-]``, starting with a letter and
ending with a hex digit, within Vertex AI's rules for both fields). So the endpoint is
found by name even when the run that made it died before labelling it, and a
concurrent duplicate ``:deploy`` fails with ALREADY_EXISTS (409), which is taken as
"made by another attempt": that endpoint is awaited and reused. Deployments made
before the ids existed are still found by their labels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from tune2serve.components.deploy import existing, preflight
from tune2serve.components.deploy.request import (
    DeploySpec,
    MachineSpec,
    build_deploy_request,
    build_recommend_spec_request,
    default_display_name,
    deployment_ids,
    deployment_labels,
    identity_labels,
    machine_specs_from_recommendation,
)
from tune2serve.components.errors import (
    OperationFailedError,
    VertexError,
    VertexUnavailableError,
    VertexUserError,
)
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.vertex import endpoints as vendpoints
from tune2serve.components.vertex.clients import VertexTarget, http_client, init_sdk, target
from tune2serve.components.vertex.errors import raise_for_vertex_status, translate_api_error
from tune2serve.components.vertex.operations import wait_for_operation
from tune2serve.components.vertex.retry import DEFAULT_POLL, PollPolicy, RetryPolicy, call_with_retry

_log = get_logger("deploy")

# The :deploy call itself (not the operation) is retried briefly on 429/503: a quota
# error that persists must reach the user in seconds, not after minutes of backoff.
SUBMIT_RETRY = RetryPolicy(initial_delay_s=1.0, max_delay_s=5.0, max_attempts=3, deadline_s=20.0)


@dataclass(frozen=True)
class DeployResult:
    endpoint: str
    model: str
    deployed_model_id: str
    dedicated_endpoint_dns: str
    reused: bool = False
    operation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "operation"}


def _model_garden_client(vertex: VertexTarget) -> Any:
    """The SDK's v1beta1 Model Garden client, configured as ``vertexai.init`` says (the
    same construction ``CustomModel`` uses)."""
    from google.cloud.aiplatform import compat, initializer, utils
    from google.cloud.aiplatform_v1beta1.services import model_garden_service

    class _ModelGardenClient(utils.ClientWithOverride):
        _is_temporary = True
        _default_version = compat.V1BETA1
        _version_map = ((compat.V1BETA1, model_garden_service.ModelGardenServiceClient),)

    init_sdk(vertex)
    return initializer.global_config.create_client(client_class=_ModelGardenClient, location_override=vertex.region)


def recommend_machine(vertex: VertexTarget, export_uri: str, serving_bytes: int | None) -> MachineSpec:
    """Vertex's recommended machine spec for the export (what list_deploy_options shows),
    the first one that also fits validate's serving-memory estimate."""
    with http_client(vertex) as client:
        url = f"{vertex.rest_base_url}/v1beta1/{vertex.parent}:recommendSpec"
        response = call_with_retry(lambda: _post(client, url, build_recommend_spec_request(export_uri)),
                                   what="recommendSpec", policy=SUBMIT_RETRY)
    spec = preflight.pick_recommended(machine_specs_from_recommendation(response), serving_bytes, export_uri)
    log_event(_log, "deploy.machine_recommended", f"Vertex AI recommends {spec.machine_type} "
              f"with {spec.accelerator_count} x {spec.accelerator_type}", **spec.to_dict())
    return spec


def _post(client: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        response = client.post(url, json=body)
    except Exception as e:
        raise translate_api_error(e, resource_name=url) from e
    raise_for_vertex_status(response)
    return dict(response.json())


def _reuse(vertex: VertexTarget, endpoint: vendpoints.EndpointState, labels: dict[str, str]) -> DeployResult:
    # The deployed model serving most of the traffic is the one deploy made.
    dm = max(endpoint.deployed_models, key=lambda d: endpoint.traffic_split.get(d.id, 0))
    existing.complete_labels(vertex, endpoint, dm.model, labels)
    log_event(_log, "deploy.reused", f"{endpoint.name} already serves this export "
              f"(deployed model {dm.id}); nothing new is made", endpoint=endpoint.name, model=dm.model)
    return DeployResult(endpoint.name, dm.model, dm.id, endpoint.dedicated_endpoint_dns, reused=True)


def _clean_up_failed(vertex: VertexTarget, display_name: str, labels: dict[str, str]) -> list[str]:
    """Deletes endpoints a failed deploy left without a deployed model: those with our
    display name that carry no labels yet or our identity labels. Returns their names."""
    from google.cloud import aiplatform

    identity = identity_labels(labels)
    try:
        found = aiplatform.Endpoint.list(filter=f'display_name="{display_name}"',
                                         project=vertex.project, location=vertex.region)
    except Exception as e:
        raise translate_api_error(e) from e
    deleted = []
    for ep in found:
        state = vendpoints.endpoint_state_from_resource(ep.gca_resource)
        ours = not state.labels or all(state.labels.get(k) == v for k, v in identity.items())
        if state.display_name == display_name and ours and not state.deployed_models:
            vendpoints.delete_endpoint(vertex, state.name)
            deleted.append(state.name)
    return deleted


def deploy_export(spec: DeploySpec, *, poll: PollPolicy = DEFAULT_POLL,
                  on_operation: Callable[[str], None] | None = None) -> DeployResult:
    """Deploys ``spec.export_uri`` (or finds the deployment an earlier run made)."""
    vertex = target(spec.project, spec.region)
    checked = preflight.check_export(spec.export_uri, spec.machine, spec.validated)
    digest = checked.identity.digest
    labels = deployment_labels(spec.export_uri, digest, spec.run_id)
    spec = replace(spec, endpoint_display_name=spec.endpoint_display_name or default_display_name(digest),
                   model_display_name=spec.model_display_name or default_display_name(digest))
    ids = deployment_ids(spec.export_uri, digest)
    init_sdk(vertex)
    found = existing.find(vertex, ids, labels)
    if found.healthy is not None:
        return _reuse(vertex, found.healthy, labels)
    ids = existing.clear_leftovers(vertex, found, ids)
    machine = spec.machine or recommend_machine(vertex, spec.export_uri, checked.serving_bytes)
    request = build_deploy_request(spec, machine, ids)
    log_event(_log, "deploy.request", f"deploying {spec.export_uri} to {vertex.parent}",
              export=spec.export_uri, request=json.dumps(request, sort_keys=True))
    try:
        operation = _submit(vertex, spec, request, machine)
    except VertexUserError as e:
        if e.status_code != 409:
            raise
        return _reuse(vertex, existing.adopt(vertex, ids, labels, deadline_s=spec.deploy_timeout_s, poll=poll),
                      labels)
    response = _wait(vertex, spec, operation, labels, poll, on_operation)
    endpoint_name, model_name = str(response.endpoint), str(response.model)
    vendpoints.update_endpoint_labels(vertex, endpoint_name, labels)
    if model_name:
        existing.label_model(vertex, model_name, labels)
    state = vendpoints.get_endpoint(vertex, endpoint_name)
    dm = next((d for d in state.deployed_models if not model_name or d.model.split("@")[0] == model_name.split("@")[0]),
              state.deployed_models[0] if state.deployed_models else None)
    if dm is None:
        raise OperationFailedError(f"{endpoint_name}: the deploy finished but the endpoint has no deployed model",
                                   resource_name=endpoint_name)
    result = DeployResult(endpoint_name, model_name or dm.model, dm.id, state.dedicated_endpoint_dns)
    log_event(_log, "deploy.done", f"{endpoint_name} serves {result.model} as deployed model {dm.id}",
              endpoint=endpoint_name, model=result.model, deployed_model_id=dm.id,
              dedicated_endpoint_dns=state.dedicated_endpoint_dns)
    return result


def _submit(vertex: VertexTarget, spec: DeploySpec, request: dict[str, Any], machine: MachineSpec | None) -> Any:
    """Sends ``:deploy`` (retried briefly on 429/5xx); returns the operation future.

    Raises:
        VertexUnavailableError: still refused after the retries; for a 429, the message
            says it is the Custom Model Serving quota and what to do.
        VertexUserError: 400/403/404/409 (409: the ids are taken; the caller adopts).
    """
    from google.cloud.aiplatform_v1beta1 import types

    client = _model_garden_client(vertex)
    proto = types.DeployRequest(request)

    def submit() -> Any:
        try:
            return client.deploy(request=proto)
        except Exception as e:
            raise translate_api_error(e, resource_name=vertex.parent) from e

    try:
        return call_with_retry(submit, what="deploy request", policy=SUBMIT_RETRY)
    except VertexUnavailableError as e:
        if e.status_code != 429:
            raise
        wanted = (f"{machine.accelerator_count} x {machine.accelerator_type} on {machine.machine_type}"
                  if machine else "the recommended machine")
        raise VertexUnavailableError(
            f"{vertex.parent}: Vertex AI refused to deploy {spec.export_uri} for lack of quota (429, still after "
            f"{SUBMIT_RETRY.max_attempts} attempts): {e.message}. Deploying custom weights needs 'Custom Model "
            f"Serving' quota for {wanted} in {vertex.region}: request an increase (IAM & Admin > Quotas, "
            "aiplatform.googleapis.com custom model serving) or choose another machine spec or region, then rerun. "
            "Nothing was deployed.",
            status_code=429, resource_name=vertex.parent,
        ) from e


def _wait(vertex: VertexTarget, spec: DeploySpec, operation: Any, labels: dict[str, str], poll: PollPolicy,
          on_operation: Callable[[str], None] | None) -> Any:
    try:
        return wait_for_operation(operation, what=f"deploy of {spec.export_uri}", deadline_s=spec.deploy_timeout_s,
                                  policy=poll, on_started=on_operation)
    except VertexError:
        deleted = _clean_up_failed(vertex, str(spec.endpoint_display_name), labels)
        if deleted:
            log_event(_log, "deploy.cleanup", f"deleted {', '.join(deleted)} left behind by the failed deploy",
                      logging.WARNING, endpoints=deleted)
        raise
