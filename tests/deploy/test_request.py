"""Pure builders of the :deploy request, labels and machine-spec flags."""

from __future__ import annotations

import hashlib

import pytest

from tune2serve.components.deploy.request import (
    DeploySpec,
    ReservationAffinity,
    DeploymentIds,
    build_deploy_request,
    deployment_ids,
    deployment_labels,
    machine_specs_from_recommendation,
    reservation_from_flags,
    vertex_resource_uri,
)
from tune2serve.components.errors import UsageError
from tune2serve.components.vertex.machine_spec import MachineSpec
from tune2serve.components.vertex.machine_spec import parse_machine_spec as machine_spec_from_flags
from tune2serve.components.vertex.resources import sanitize_label_value

L4 = MachineSpec("g2-standard-12", "NVIDIA_L4", 1)


IDS = DeploymentIds("t2s-abababababababab-0123456789abcdef", "t2s-abababababababab-0123456789abcdef")


def test_public_dedicated_deploy_request() -> None:
    spec = DeploySpec("gs://b/exports/x/", "p", "us-central1", endpoint_display_name="ep", model_display_name="m")
    assert build_deploy_request(spec, L4, IDS) == {
        "destination": "projects/p/locations/us-central1",
        "custom_model": {"gcs_uri": "gs://b/exports/x"},
        "endpoint_config": {"endpoint_user_id": "t2s-abababababababab-0123456789abcdef",
                            "endpoint_display_name": "ep"},
        "model_config": {"model_display_name": "m", "model_user_id": "t2s-abababababababab-0123456789abcdef"},
        "deploy_config": {"dedicated_resources": {
            "machine_spec": {"machine_type": "g2-standard-12", "accelerator_type": "NVIDIA_L4", "accelerator_count": 1},
            "min_replica_count": 1, "max_replica_count": 1}},
    }


def test_psc_and_reservation_deploy_request_parses_as_the_sdk_proto() -> None:
    from google.cloud.aiplatform_v1beta1 import types

    spec = DeploySpec("gs://b/x", "p", "europe-west4", min_replica_count=2, max_replica_count=4,
                      enable_private_service_connect=True, psc_project_allowlist=("p", "q"),
                      reservation=ReservationAffinity("SPECIFIC_RESERVATION", "compute.googleapis.com/reservation-name",
                                                      ("projects/p/zones/z/reservations/r",)))
    body = build_deploy_request(spec, L4, DeploymentIds("t2s-1-2", None))
    assert body == {
        "destination": "projects/p/locations/europe-west4",
        "custom_model": {"gcs_uri": "gs://b/x"},
        "endpoint_config": {"endpoint_user_id": "t2s-1-2",
                            "private_service_connect_config": {"enable_private_service_connect": True,
                                                               "project_allowlist": ["p", "q"]}},
        "deploy_config": {"dedicated_resources": {
            "machine_spec": {"machine_type": "g2-standard-12", "accelerator_type": "NVIDIA_L4", "accelerator_count": 1,
                             "reservation_affinity": {"reservation_affinity_type": "SPECIFIC_RESERVATION",
                                                      "key": "compute.googleapis.com/reservation-name",
                                                      "values": ["projects/p/zones/z/reservations/r"]}},
            "min_replica_count": 2, "max_replica_count": 4}},
    }
    proto = types.DeployRequest(body)  # strict: a misspelt field would raise here
    assert proto.endpoint_config.endpoint_user_id == "t2s-1-2" and proto.model_config.model_user_id == ""
    assert proto.endpoint_config.private_service_connect_config.project_allowlist == ["p", "q"]
    assert proto.deploy_config.dedicated_resources.machine_spec.accelerator_type.name == "NVIDIA_L4"


def test_no_machine_spec_leaves_it_to_vertex() -> None:
    body = build_deploy_request(DeploySpec("gs://b/x", "p", "r"), None)
    assert body["deploy_config"] == {"dedicated_resources": {"min_replica_count": 1, "max_replica_count": 1}}
    assert "endpoint_config" not in body and "model_config" not in body


def test_labels_tie_resources_to_the_export() -> None:
    digest = "ab" * 32
    assert deployment_labels("gs://b/x/", digest, "Run 2024/01:A") == {
        "tune2serve-export": hashlib.sha256(b"gs://b/x").hexdigest()[:32],
        "tune2serve-manifest": "ab" * 16,
        "managed-by": "tune2serve",
        "tune2serve-run": "run-2024-01-a",
    }
    assert "tune2serve-run" not in deployment_labels("gs://b/x", digest)
    assert len(sanitize_label_value("X" * 100)) == 63


def test_ids_are_deterministic_and_within_vertex_rules() -> None:
    import re

    from google.cloud.aiplatform_v1beta1 import types

    digest = "AB" * 32
    ids = deployment_ids("gs://b/x/", digest)
    export_hash = hashlib.sha256(b"gs://b/x").hexdigest()
    assert ids == DeploymentIds(f"t2s-{'ab' * 8}-{export_hash[:16]}", f"t2s-{'ab' * 8}-{export_hash[:16]}")
    assert ids == deployment_ids("gs://b/x", digest.lower())  # same export, same ids
    assert deployment_ids("gs://b/y", digest) != ids and deployment_ids("gs://b/x", "cd" * 32) != ids
    # endpoint_user_id: first a letter, <= 63 of [a-z0-9-], last a letter or digit;
    # model_user_id: <= 63 of [a-z0-9_-], first not a digit or '-' (the proto docstrings)
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,61}[a-z0-9]", ids.endpoint_id)
    assert re.fullmatch(r"[a-z_][a-z0-9_-]{0,62}", str(ids.model_id))
    assert ids.endpoint_name("projects/p/locations/r") == f"projects/p/locations/r/endpoints/{ids.endpoint_id}"
    assert DeploymentIds("e", None).model_name("projects/p/locations/r") is None
    body = build_deploy_request(DeploySpec("gs://b/x", "p", "r"), None, ids)
    assert types.DeployRequest(body).model_config.model_user_id == ids.model_id


@pytest.mark.parametrize(("flags", "message"), [
    (("g2-standard-12", None, None), "--machine-type given without --accelerator-type, --accelerator-count"),
    ((None, "NVIDIA_L4", 1), "--accelerator-type, --accelerator-count given without --machine-type"),
    (("g2-standard-12", "NVIDIA_L4", 3), "must be 1, 2, 4 or 8"),
])
def test_machine_spec_all_or_nothing(flags: tuple, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        machine_spec_from_flags(*flags)
    assert machine_spec_from_flags(None, "", 0) is None
    assert machine_spec_from_flags("g2-standard-12", "nvidia_l4", 1) == L4


def test_reservation_flags() -> None:
    assert reservation_from_flags(None, None, None) is None
    assert reservation_from_flags("any_reservation", None, None) == ReservationAffinity("ANY_RESERVATION")
    with pytest.raises(UsageError, match="needs --reservation-key"):
        reservation_from_flags("SPECIFIC_RESERVATION", None, None)


def test_recommendations_keep_only_specs_with_quota() -> None:
    response = {"recommendations": [
        {"spec": {"machineSpec": {"machineType": "a2-highgpu-1g", "acceleratorType": "NVIDIA_TESLA_A100",
                                  "acceleratorCount": 1}}, "userQuotaState": "QUOTA_STATE_NO_USER_QUOTA"},
        {"spec": {"machineSpec": {"machineType": "g2-standard-12", "acceleratorType": "NVIDIA_L4",
                                  "acceleratorCount": 1}}, "userQuotaState": "QUOTA_STATE_USER_HAS_QUOTA"}]}
    assert machine_specs_from_recommendation(response) == [L4]


def test_artifact_uri_is_the_gcpc_form() -> None:
    assert vertex_resource_uri("us-central1", "projects/p/locations/us-central1/endpoints/1") == \
        "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/endpoints/1"


def _memory_spec_bytes(machine: str, accelerator: str, count: int) -> int:
    from tune2serve.components.vertex import machine_spec as memory

    return memory.MachineSpec(machine, accelerator, count).usable_bytes()


def test_recommendation_too_small_for_the_estimate_is_refused_naming_the_smallest_that_fits() -> None:
    from tune2serve.components.deploy.preflight import pick_recommended

    need = _memory_spec_bytes("g2-standard-12", "NVIDIA_L4", 1) + 1  # one byte more than an L4 holds
    with pytest.raises(UsageError, match=r"gs://b/x: Vertex AI recommended no machine spec that holds this model "
                                         r"\(validate estimates 20\.1 GiB of GPU memory; recommended: g2-standard-12 "
                                         r"with 1 x NVIDIA_L4\); the smallest spec that fits is a2-highgpu-1g with 1 x "
                                         r"NVIDIA_TESLA_A100: give --machine-type a2-highgpu-1g --accelerator-type "
                                         r"NVIDIA_TESLA_A100 --accelerator-count 1"):
        pick_recommended([L4], need, "gs://b/x")
    with pytest.raises(UsageError, match=r"recommended: none\); the smallest spec that fits is g2-standard-12"):
        pick_recommended([], 1000, "gs://b/x")


def test_the_first_recommendation_that_holds_the_estimate_is_taken() -> None:
    from tune2serve.components.deploy.preflight import pick_recommended

    a100 = MachineSpec("a2-highgpu-1g", "NVIDIA_TESLA_A100", 1)
    need = _memory_spec_bytes("g2-standard-12", "NVIDIA_L4", 1) + 1
    assert pick_recommended([L4, a100], need, "gs://b/x") == a100
    assert pick_recommended([L4, a100], 1000, "gs://b/x") == L4
    assert pick_recommended([L4], None, "gs://b/x") == L4  # no estimate: Vertex's word stands
