"""Finding what an earlier deploy of the same export made, so a rerun reuses it.

Two keys, because deployments exist that were made before the ids were:
1. The deterministic ids (``request.deployment_ids``) the ``:deploy`` request asks for:
   a GET by name finds the endpoint even when the run that made it died before
   labelling it. A ``:deploy`` that collides with them answers ALREADY_EXISTS (409);
   that means "another attempt made it": wait for it and reuse it (``adopt``).
2. The identity labels (``tune2serve-export``, ``tune2serve-manifest``) that deploy has
   always written, for endpoints with a Vertex-generated id.

Reusing also completes the labels an interrupted run did not write; an endpoint left
with no deployed model is deleted (and our Model with it, when nothing serves it), so
the redeploy can take the ids again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from tune2serve.components.deploy.request import DeploymentIds, identity_labels
from tune2serve.components.errors import OperationFailedError, VertexError, VertexUserError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.vertex import endpoints as vendpoints
from tune2serve.components.vertex.clients import VertexTarget
from tune2serve.components.vertex.errors import translate_api_error
from tune2serve.components.vertex.retry import PollPolicy

_log = get_logger("deploy.existing")


@dataclass(frozen=True)
class ModelState:
    name: str
    labels: dict[str, str]
    deployed_on: tuple[str, ...]  # endpoint names


def get_endpoint_or_none(vertex: VertexTarget, name: str) -> vendpoints.EndpointState | None:
    try:
        return vendpoints.get_endpoint(vertex, name)
    except VertexUserError as e:
        if e.status_code == 404:
            return None
        raise


def get_model_or_none(vertex: VertexTarget, name: str) -> ModelState | None:
    from google.api_core import exceptions as gexc

    try:
        model = vendpoints.gapic_client(vertex, "models").get_model(name=name)
    except gexc.NotFound:
        return None
    except Exception as e:
        raise translate_api_error(e, resource_name=name) from e
    return ModelState(str(model.name), dict(model.labels), tuple(str(d.endpoint) for d in model.deployed_models))


def delete_model(vertex: VertexTarget, name: str) -> None:
    from google.api_core import exceptions as gexc

    try:
        vendpoints.gapic_client(vertex, "models").delete_model(name=name).result(timeout=300)
    except gexc.NotFound:
        return
    except Exception as e:
        raise translate_api_error(e, resource_name=name) from e


def _check_ours(state: vendpoints.EndpointState, labels: dict[str, str]) -> None:
    """An endpoint with our id but another export's labels is not ours to reuse or delete."""
    identity = identity_labels(labels)
    clash = {k: state.labels[k] for k in identity if k in state.labels and state.labels[k] != identity[k]}
    if clash:
        raise VertexUserError(f"{state.name}: this endpoint id belongs to this export's deployments but the "
                              f"endpoint carries other labels ({clash}); delete it or deploy under another "
                              "project/region", status_code=409, resource_name=state.name)


@dataclass(frozen=True)
class Found:
    healthy: vendpoints.EndpointState | None  # to reuse
    leftovers: tuple[vendpoints.EndpointState, ...]  # ours, with no deployed model: to delete


def find(vertex: VertexTarget, ids: DeploymentIds, labels: dict[str, str]) -> Found:
    """What earlier attempts made for this export: by id first, then by labels."""
    by_id = get_endpoint_or_none(vertex, ids.endpoint_name(vertex.parent))
    if by_id is not None:
        _check_ours(by_id, labels)
    by_labels = vendpoints.list_endpoints(vertex, identity_labels(labels))
    candidates = ([by_id] if by_id is not None else []) + [e for e in by_labels if by_id is None or e.name != by_id.name]
    healthy = next((e for e in candidates if e.deployed_models), None)
    return Found(healthy, tuple(e for e in candidates if not e.deployed_models))


def clear_leftovers(vertex: VertexTarget, found: Found, ids: DeploymentIds) -> DeploymentIds:
    """Deletes endpoints left with no deployed model and our Model when nothing serves it;
    returns the ids the new ``:deploy`` may ask for (no model id when our Model is taken:
    it serves elsewhere, e.g. promoted onto a production endpoint, and must stay)."""
    for leftover in found.leftovers:
        log_event(_log, "deploy.cleanup", f"deleting {leftover.name}: an earlier run left it with no deployed model",
                  logging.WARNING, endpoint=leftover.name)
        vendpoints.delete_endpoint(vertex, leftover.name)
    model_name = ids.model_name(vertex.parent)
    model = get_model_or_none(vertex, model_name) if model_name else None
    if model is None:
        return ids
    if not model.deployed_on:
        log_event(_log, "deploy.cleanup", f"deleting {model.name}: an earlier run registered it but nothing serves it",
                  logging.WARNING, model=model.name)
        delete_model(vertex, model.name)
        return ids
    log_event(_log, "deploy.model_id_taken", f"{model.name} already serves on {', '.join(model.deployed_on)}; "
              "the new deploy registers a Model with an id Vertex AI picks", model=model.name)
    return DeploymentIds(ids.endpoint_id, None)


def complete_labels(vertex: VertexTarget, endpoint: vendpoints.EndpointState, model: str,
                    labels: dict[str, str]) -> None:
    """Writes the labels an interrupted run did not (the endpoint's, then the Model's)."""
    identity = identity_labels(labels)
    if any(endpoint.labels.get(k) != v for k, v in identity.items()):
        log_event(_log, "deploy.labels_completed", f"labelling {endpoint.name} (an earlier run did not)",
                  endpoint=endpoint.name)
        vendpoints.update_endpoint_labels(vertex, endpoint.name, labels)
    state = get_model_or_none(vertex, model.split("@")[0])
    if state is not None and any(state.labels.get(k) != v for k, v in identity.items()):
        label_model(vertex, state.name, {**labels, **{k: v for k, v in state.labels.items() if k not in identity}})


def label_model(vertex: VertexTarget, model: str, labels: dict[str, str]) -> None:
    """Merges ``labels`` into the Model's (best effort: the endpoint's labels and ids are
    the idempotence keys; the Model's are for clean-up)."""
    from google.cloud import aiplatform

    try:
        with vendpoints.quiet_sdk():
            m = aiplatform.Model(model_name=model, project=vertex.project, location=vertex.region)
            m.update(labels={**dict(m.gca_resource.labels), **labels})
    except Exception as e:
        err = e if isinstance(e, VertexError) else translate_api_error(e, resource_name=model)
        log_event(_log, "deploy.label_model_failed", f"could not label {model}: {err}", logging.WARNING, model=model)


def adopt(vertex: VertexTarget, ids: DeploymentIds, labels: dict[str, str], *, deadline_s: float,
          poll: PollPolicy, sleep: Callable[[float], None] = time.sleep) -> vendpoints.EndpointState:
    """After ALREADY_EXISTS: the endpoint another attempt made (or is making) with our id,
    once it serves. Waits for it up to ``deadline_s``.

    Raises:
        OperationFailedError: it did not come to serve within the deadline.
    """
    name = ids.endpoint_name(vertex.parent)
    log_event(_log, "deploy.conflict", f"{name} already exists: made by an earlier attempt; reusing it",
              endpoint=name)
    started = time.monotonic()
    for interval in poll.intervals():
        state = get_endpoint_or_none(vertex, name)
        if state is not None:
            _check_ours(state, labels)
            if state.deployed_models:
                return state
        if time.monotonic() - started + interval > deadline_s:
            break
        sleep(interval)
    raise OperationFailedError(
        f"{name}: Vertex AI says this export's deployment already exists, but no endpoint serves it after "
        f"{deadline_s:.0f} s (another deploy may still be running, or it left a Model {ids.model_id} behind); "
        "check the endpoint and model in the Cloud console, delete what is left and rerun",
        resource_name=name)
