"""Pure functions over Vertex resources as JSON dicts: names, traffic splits, list
filters, the shapes of Endpoint/Model/DeployedModel, and recommended machine specs.

Kept free of I/O so they are tested with ``==`` on literal dicts.
"""

from __future__ import annotations

import re
from typing import Any

from tune2serve.localstack.api_errors import ApiError, invalid, precondition


def location_name(project: str, region: str) -> str:
    return f"projects/{project}/locations/{region}"


def endpoint_name(project: str, region: str, endpoint_id: str) -> str:
    return f"{location_name(project, region)}/endpoints/{endpoint_id}"


def model_name(project: str, region: str, model_id: str) -> str:
    return f"{location_name(project, region)}/models/{model_id}"


def model_id_of(name_or_id: str) -> str:
    """``projects/P/locations/L/models/ID[@version]`` or ``ID`` → ``ID``."""
    tail = name_or_id.rsplit("/", 1)[-1]
    return tail.split("@", 1)[0]


def check_split(split: dict[str, int], known_ids: set[str]) -> dict[str, int]:
    """Vertex's rules: keys name deployed models on the endpoint, values are 0..100 and
    sum to 100. Zero entries are dropped, as Vertex does."""
    unknown = sorted(set(split) - known_ids)
    if unknown:
        raise invalid(f"Traffic split names deployed model(s) {', '.join(unknown)} that are not "
                      f"deployed on this endpoint; deployed: {', '.join(sorted(known_ids)) or 'none'}.")
    if any(v < 0 or v > 100 for v in split.values()):
        raise invalid(f"Traffic split percentages must be between 0 and 100; got {split}.")
    total = sum(split.values())
    if split and total != 100:
        raise invalid(f"Sum of all traffic split percentages must be 100; got {total} in {split}.")
    return {k: v for k, v in split.items() if v > 0}


def split_for_deploy(current: dict[str, int], requested: dict[str, int], new_id: str,
                     deployed_ids: set[str]) -> dict[str, int]:
    """DeployModel: a non-empty requested split replaces the endpoint's, with key "0"
    standing for the model being deployed; an empty one leaves the split unchanged —
    except on an endpoint serving nothing, where the only model gets 100."""
    if not requested:
        return dict(current) if current else {new_id: 100}
    resolved = {(new_id if k == "0" else k): v for k, v in requested.items()}
    return check_split(resolved, deployed_ids | {new_id})


def split_for_undeploy(current: dict[str, int], requested: dict[str, int], removed: str,
                       remaining_ids: set[str]) -> dict[str, int]:
    """UndeployModel: the last model leaves an empty split; otherwise the model must have
    no traffic, or the request's split must take its traffic away."""
    if not remaining_ids:
        return {}
    if requested:
        split = check_split(requested, remaining_ids | {removed})
        if split.get(removed, 0):
            raise precondition(f"The traffic split of the request still gives {split[removed]}% "
                               f"to deployed model {removed}, which is being undeployed.")
        return split
    if current.get(removed, 0):
        raise precondition(f"Deployed model {removed} still receives {current[removed]}% of the "
                           "traffic; pass a traffic split that moves its traffic elsewhere.")
    return {k: v for k, v in current.items() if k != removed}


_CLAUSE = re.compile(r'^\s*(?P<field>[A-Za-z_][\w.\-]*)\s*(?P<op>!=|=|:)\s*(?P<value>"[^"]*"|[^\s"]+)\s*$')


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    """A list filter as (field, op, value) clauses joined by AND. Supported fields:
    display_name, name and labels.KEY; ``labels.KEY:*`` means "has the label"."""
    if not text.strip():
        return []
    clauses = []
    for part in re.split(r"\s+AND\s+", text.strip(), flags=re.IGNORECASE):
        m = _CLAUSE.match(part)
        if not m:
            raise invalid(f"Invalid filter {text!r}: expected FIELD=\"VALUE\" clauses joined by AND.")
        field = {"displayName": "display_name"}.get(m.group("field"), m.group("field"))
        if field not in ("display_name", "name") and not field.startswith("labels."):
            raise invalid(f"Unsupported filter field {field!r} in {text!r}; use display_name, name or labels.KEY.")
        clauses.append((field, m.group("op"), m.group("value").strip('"')))
    return clauses


def matches(resource: dict[str, Any], clauses: list[tuple[str, str, str]]) -> bool:
    """True when the resource satisfies every clause."""
    for field, op, value in clauses:
        if field.startswith("labels."):
            actual = resource.get("labels", {}).get(field[len("labels."):])
        else:
            actual = resource.get("displayName" if field == "display_name" else "name")
        if op == ":" and value == "*":
            ok = actual is not None
        elif op == "!=":
            ok = actual != value
        else:
            ok = actual == value
        if not ok:
            return False
    return True


def deployed_model(dm_id: str, model: str, display_name: str, dedicated_resources: dict[str, Any],
                   created: str) -> dict[str, Any]:
    return {
        "id": dm_id,
        "model": model,
        "modelVersionId": "1",
        "displayName": display_name,
        "createTime": created,
        "dedicatedResources": dedicated_resources,
    }


def is_psc(endpoint: dict[str, Any]) -> bool:
    """A Private Service Connect endpoint (``privateServiceConnectConfig`` enabled)."""
    return bool((endpoint.get("privateServiceConnectConfig") or {}).get("enablePrivateServiceConnect"))


def endpoint_access(endpoint: dict[str, Any], dataplane_dns: str, dedicated: bool) -> dict[str, Any]:
    """``endpoint`` with the fields a user reaches it by, as the docs' GET shows them: a
    dedicated public endpoint has ``dedicatedEndpointEnabled`` and its
    ``dedicatedEndpointDns``; a PSC endpoint has neither (each of its deployed models has
    ``privateEndpoints.serviceAttachment`` instead, ``with_private_endpoint``); a shared
    public one has neither either (it is reached at the regional API host)."""
    out = {k: v for k, v in endpoint.items() if k not in ("dedicatedEndpointEnabled", "dedicatedEndpointDns")}
    if dedicated and not is_psc(endpoint):
        out.update(dedicatedEndpointEnabled=True, dedicatedEndpointDns=dataplane_dns)
    return out


def with_private_endpoint(dm: dict[str, Any], endpoint: dict[str, Any]) -> dict[str, Any]:
    """A deployed model of a PSC endpoint carries the service attachment a consumer's
    forwarding rule targets (``projects/TENANT/regions/R/serviceAttachments/NAME``)."""
    if not is_psc(endpoint):
        return dm
    _, project, _, region = endpoint["name"].split("/")[:4]
    attachment = f"projects/{project}-tp/regions/{region}/serviceAttachments/local-{dm['id']}"
    return {**dm, "privateEndpoints": {"serviceAttachment": attachment}}


def shared_host_refusal(endpoint: dict[str, Any]) -> ApiError | None:
    """Vertex's answer to a prediction sent to the regional API host (the shared domain)
    for an endpoint that is only reached elsewhere: a dedicated endpoint at its DNS name,
    a PSC endpoint at its PSC IP. None for a shared public endpoint."""
    if endpoint.get("dedicatedEndpointEnabled"):
        return precondition("This endpoint is a dedicated endpoint via CloudESF and cannot be accessed through "
                            "the Vertex AI API. Please access the endpoint using its dedicated dns name "
                            f"'{endpoint.get('dedicatedEndpointDns', '')}'")
    if is_psc(endpoint):
        return precondition("This endpoint is a private endpoint (Private Service Connect) and cannot be accessed "
                            "through the Vertex AI API. Please access the endpoint through a Private Service Connect "
                            "endpoint (forwarding rule) targeting its deployed models' serviceAttachment.")
    return None


def dedicated_resources(requested: dict[str, Any]) -> dict[str, Any]:
    """The request's dedicated resources with Vertex's defaults: one replica, and a CPU
    machine type when none is given (the local stack serves on CPU whatever is asked)."""
    out = dict(requested)
    out.setdefault("machineSpec", {"machineType": "n1-standard-4"})
    out["minReplicaCount"] = int(out.get("minReplicaCount") or 1)
    out["maxReplicaCount"] = max(int(out.get("maxReplicaCount") or 0), out["minReplicaCount"])
    return out


MAX_LABELS = 64
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def check_labels(labels: dict[str, str]) -> None:
    """Vertex's label rules: at most 64; keys start with a lowercase letter; keys and
    values at most 63 lowercase letters, digits, ``_`` or ``-``."""
    if len(labels) > MAX_LABELS:
        raise invalid(f"At most {MAX_LABELS} labels are allowed; got {len(labels)}.")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise invalid(f"Label key {key!r} is invalid: use 1-63 lowercase letters, digits, '_' or '-', "
                          "starting with a letter.")
        if not _LABEL_VALUE.match(str(value)):
            raise invalid(f"Label value {value!r} of {key!r} is invalid: use at most 63 lowercase letters, "
                          "digits, '_' or '-'.")


UNSET_VALUES = (None, "", 0, "0", "ACCELERATOR_TYPE_UNSPECIFIED")


def machine_spec_without_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """A machine spec with the fields the request left at their proto defaults removed.

    Requests reach the server as proto JSON with defaults written out, so a CPU-only
    spec arrives as ``acceleratorType: "ACCELERATOR_TYPE_UNSPECIFIED"`` (or ``0`` with
    ``enum-encoding=int``) and ``acceleratorCount: 0``: both mean "not set"."""
    return {k: v for k, v in spec.items() if v not in UNSET_VALUES}


def recommend_specs(total_bytes: int) -> list[dict[str, Any]]:
    """Machine specs that fit a model of ``total_bytes`` weights, smallest first (weights
    plus ~20% for KV cache and activations per GPU set), as RecommendSpec answers."""
    need_gb = total_bytes * 1.2 / 1e9
    catalog = [
        ("g2-standard-12", "NVIDIA_L4", 1, 24), ("g2-standard-24", "NVIDIA_L4", 2, 48),
        ("g2-standard-48", "NVIDIA_L4", 4, 96), ("a2-highgpu-1g", "NVIDIA_TESLA_A100", 1, 40),
        ("a2-ultragpu-1g", "NVIDIA_A100_80GB", 1, 80), ("a3-highgpu-1g", "NVIDIA_H100_80GB", 1, 80),
        ("a2-ultragpu-2g", "NVIDIA_A100_80GB", 2, 160), ("a3-highgpu-2g", "NVIDIA_H100_80GB", 2, 160),
        ("a3-highgpu-4g", "NVIDIA_H100_80GB", 4, 320), ("a3-highgpu-8g", "NVIDIA_H100_80GB", 8, 640),
    ]
    return [
        {"machineType": m, "acceleratorType": a, "acceleratorCount": c}
        for m, a, c, gb in catalog if gb >= need_gb
    ][:3]


USER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
