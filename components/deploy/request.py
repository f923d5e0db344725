"""What a deploy asks for, as plain values, and the pure builders of the Vertex request
bodies and labels (tested with ``==`` against literal dicts).

``build_deploy_request`` returns the ``DeployRequest`` of ``v1beta1 ...:deploy`` as a
dict with the proto's field names; ``types.DeployRequest(mapping)`` parses it strictly,
so a misspelt field fails at once. We build it ourselves rather than call
``CustomModel.deploy`` because that method blocks without handing out the operation
name, drops the PSC config unless an allow-list is given, and cannot label resources.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.errors import UsageError
from tune2serve.components.vertex.machine_spec import MachineSpec
from tune2serve.components.vertex.resources import sanitize_label_value

DEFAULT_DEPLOY_TIMEOUT_S = 2 * 3600  # the SDK's own default for a custom-weights deploy
RESERVATION_TYPES = ("NO_RESERVATION", "ANY_RESERVATION", "SPECIFIC_RESERVATION",
                     "SPECIFIC_THEN_ANY_RESERVATION", "SPECIFIC_THEN_NO_RESERVATION")

LABEL_EXPORT = "tune2serve-export"
LABEL_MANIFEST = "tune2serve-manifest"
LABEL_RUN = "tune2serve-run"
LABEL_MANAGED_BY = "managed-by"


@dataclass(frozen=True)
class Validated:
    """What validate found for a folder, as the pipeline hands it to deploy (validate's
    summary; the DAG deploys only when that validation passed). Deploy reuses it instead
    of validating again only for the very files validated and the same machine spec
    (``preflight.check_export``)."""

    identity: dict[str, str] | None  # {"basis", "digest"}: checkpoint/identity.py of the files validated
    machine_spec: dict[str, Any] | None  # the spec the memory was checked against (MachineSpec.to_dict)
    serving_bytes: int | None  # validate's serving-memory estimate (weights + KV cache)

    @classmethod
    def from_summary(cls, text: str) -> Validated | None:
        """From validate's summary JSON; None when there is none or it does not parse
        (then deploy validates)."""
        try:
            summary = json.loads(text) if text else None
        except ValueError:
            return None
        if not isinstance(summary, dict):
            return None
        identity, spec, serving = (summary.get(k) for k in ("identity", "machine_spec", "serving_memory_bytes"))
        return cls(identity if isinstance(identity, dict) else None, spec if isinstance(spec, dict) else None,
                   serving if isinstance(serving, int) and not isinstance(serving, bool) and serving > 0 else None)


@dataclass(frozen=True)
class ReservationAffinity:
    type: str
    key: str | None = None
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploySpec:
    """Everything ``deploy`` needs, checked at the edge (CLI flags, component inputs)."""

    export_uri: str
    project: str
    region: str
    machine: MachineSpec | None = None
    min_replica_count: int = 1
    max_replica_count: int = 1
    endpoint_display_name: str | None = None
    model_display_name: str | None = None
    enable_private_service_connect: bool = False
    psc_project_allowlist: tuple[str, ...] = ()
    reservation: ReservationAffinity | None = None
    deploy_timeout_s: float = DEFAULT_DEPLOY_TIMEOUT_S
    run_id: str | None = None
    validated: Validated | None = None  # in the pipeline: validate's result for this export
    extra: dict[str, Any] = field(default_factory=dict)


def reservation_from_flags(kind: str | None, key: str | None, values: list[str] | tuple[str, ...] | None
                           ) -> ReservationAffinity | None:
    if not kind:
        if key or values:
            raise UsageError("--reservation-key/--reservation-values need --reservation-affinity")
        return None
    kind = kind.upper()
    if kind not in RESERVATION_TYPES:
        raise UsageError(f"--reservation-affinity {kind}: expected one of {', '.join(RESERVATION_TYPES)}")
    if kind.startswith("SPECIFIC") and not (key and values):
        raise UsageError(f"--reservation-affinity {kind} needs --reservation-key (e.g. "
                         "compute.googleapis.com/reservation-name) and --reservation-values "
                         "(projects/P/zones/Z/reservations/NAME)")
    return ReservationAffinity(kind, key or None, tuple(values or ()))


def check_replicas(min_replica_count: int, max_replica_count: int) -> None:
    if min_replica_count < 1:
        raise UsageError(f"--min-replica-count {min_replica_count}: must be at least 1")
    if max_replica_count < min_replica_count:
        raise UsageError(f"--max-replica-count {max_replica_count} is below --min-replica-count {min_replica_count}")


def normalize_export_uri(uri: str) -> str:
    """``gs://b/x/`` and ``gs://b/x`` are the same export (labels must agree)."""
    return uri.strip().rstrip("/")


def deployment_labels(export_uri: str, manifest_digest: str, run_id: str | None = None) -> dict[str, str]:
    """The labels tying a Model and Endpoint to the export they serve (and the run).
    ``tune2serve-manifest`` carries the folder's identity digest: its manifest's, or for a
    folder without one the digest of its object listing (the label keeps its name so
    deployments made before are still found)."""
    labels = {
        LABEL_EXPORT: hashlib.sha256(normalize_export_uri(export_uri).encode()).hexdigest()[:32],
        LABEL_MANIFEST: manifest_digest[:32],
        LABEL_MANAGED_BY: "tune2serve",
    }
    if run_id and sanitize_label_value(run_id):
        labels[LABEL_RUN] = sanitize_label_value(run_id)
    return labels


def identity_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels that identify *what* is deployed (not which run did it): the
    idempotence key, so a rerun under another run id still finds the deployment."""
    return {k: labels[k] for k in (LABEL_EXPORT, LABEL_MANIFEST)}


@dataclass(frozen=True)
class DeploymentIds:
    """The resource ids ``:deploy`` is asked to use (``model_config.model_user_id``,
    ``endpoint_config.endpoint_user_id``), so what a deploy makes can be found by name
    even before it is labelled. ``model_id`` None: let Vertex AI pick one."""

    endpoint_id: str
    model_id: str | None

    def endpoint_name(self, parent: str) -> str:
        return f"{parent}/endpoints/{self.endpoint_id}"

    def model_name(self, parent: str) -> str | None:
        return f"{parent}/models/{self.model_id}" if self.model_id else None


def deployment_ids(export_uri: str, manifest_digest: str) -> DeploymentIds:
    """``t2s-<16 hex of the manifest digest>-<16 hex of sha256(export URI)>`` for both.

    The same two values as the identity labels, so id and labels name the same thing.
    Within Vertex AI's rules for both fields: starts with a letter, 37 characters of
    ``[a-z0-9-]``, ends with a hex digit (endpoint_user_id: ≤ 63 of ``[a-z0-9-]``, last
    a letter or digit; model_user_id: ≤ 63 of ``[a-z0-9_-]``, first not a digit or '-').
    """
    export_hash = hashlib.sha256(normalize_export_uri(export_uri).encode()).hexdigest()
    user_id = f"t2s-{manifest_digest[:16].lower()}-{export_hash[:16]}"
    return DeploymentIds(endpoint_id=user_id, model_id=user_id)


def default_display_name(manifest_digest: str) -> str:
    return f"tune2serve-{manifest_digest[:12]}"


def build_deploy_request(spec: DeploySpec, machine: MachineSpec | None,
                         ids: DeploymentIds | None = None) -> dict[str, Any]:
    """The ``v1beta1 projects/P/locations/R:deploy`` body for a custom-weights deploy."""
    parent = f"projects/{spec.project}/locations/{spec.region}"
    endpoint_config: dict[str, Any] = {}
    if ids is not None:
        endpoint_config["endpoint_user_id"] = ids.endpoint_id
    if spec.endpoint_display_name:
        endpoint_config["endpoint_display_name"] = spec.endpoint_display_name
    if spec.enable_private_service_connect:
        psc: dict[str, Any] = {"enable_private_service_connect": True}
        if spec.psc_project_allowlist:
            psc["project_allowlist"] = list(spec.psc_project_allowlist)
        endpoint_config["private_service_connect_config"] = psc
    dedicated: dict[str, Any] = {"min_replica_count": spec.min_replica_count,
                                 "max_replica_count": spec.max_replica_count}
    if machine is not None:
        machine_spec = machine.to_dict()
        if spec.reservation is not None:
            affinity: dict[str, Any] = {"reservation_affinity_type": spec.reservation.type}
            if spec.reservation.key:
                affinity["key"] = spec.reservation.key
                affinity["values"] = list(spec.reservation.values)
            machine_spec["reservation_affinity"] = affinity
        dedicated["machine_spec"] = machine_spec
    request: dict[str, Any] = {
        "destination": parent,
        "custom_model": {"gcs_uri": normalize_export_uri(spec.export_uri)},
        "deploy_config": {"dedicated_resources": dedicated},
    }
    if endpoint_config:  # empty: a public dedicated endpoint, Vertex's default
        request["endpoint_config"] = endpoint_config
    model_config: dict[str, Any] = {}
    if spec.model_display_name:
        model_config["model_display_name"] = spec.model_display_name
    if ids is not None and ids.model_id:
        model_config["model_user_id"] = ids.model_id
    if model_config:
        request["model_config"] = model_config
    return request


def build_recommend_spec_request(export_uri: str, check_quota: bool = True) -> dict[str, Any]:
    """The ``v1beta1 projects/P/locations/R:recommendSpec`` body (what
    ``CustomModel.list_deploy_options`` sends)."""
    return {"gcsUri": normalize_export_uri(export_uri), "checkMachineAvailability": True,
            "checkUserQuota": check_quota}


def machine_specs_from_recommendation(response: dict[str, Any]) -> list[MachineSpec]:
    """Machine specs from a ``RecommendSpecResponse`` (JSON), in Vertex's order; with
    quota information, only those the project has quota for."""
    out: list[MachineSpec] = []
    recommendations = response.get("recommendations") or []
    specs = [r.get("spec", {}) for r in recommendations
             if r.get("userQuotaState") in (None, "QUOTA_STATE_UNSPECIFIED", "QUOTA_STATE_USER_HAS_QUOTA")]
    if not recommendations:
        specs = response.get("specs") or []
    for s in specs:
        m = s.get("machineSpec") or {}
        if m.get("machineType") and m.get("acceleratorType") and m.get("acceleratorCount"):
            out.append(MachineSpec(m["machineType"], m["acceleratorType"], int(m["acceleratorCount"])))
    return out


def vertex_resource_uri(region: str, resource_name: str) -> str:
    """The artifact URI GCPC gives VertexModel/VertexEndpoint (the UI links it)."""
    return f"https://{region}-aiplatform.googleapis.com/v1/{resource_name}"
