"""deploy against the local stack, through the real SDK: one tuned deployment for the
module; reruns, refusals and an injected failed operation around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.demo.deployments import MACHINE_FLAGS, exported, stack_environ
from tune2serve.components.deploy.deploy import DeployResult, deploy_export
from tune2serve.components.deploy.request import DeploySpec, MachineSpec
from tune2serve.components.errors import OperationFailedError
from tune2serve.pipelines.cli import main

L4 = MachineSpec("g2-standard-12", "NVIDIA_L4", 1)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def tuned(local_stack, demo_root: Path) -> tuple[str, DeployResult]:  # type: ignore[no-untyped-def]
    uri = exported(local_stack, demo_root, "tuned")
    with stack_environ(local_stack):
        return uri, deploy_export(DeploySpec(uri, local_stack.project, local_stack.region, L4, run_id="Test Run 1"))


def _endpoints(stack, filter_text: str | None = None) -> list:  # type: ignore[no-untyped-def]
    from google.cloud import aiplatform

    stack.vertex_init()
    return list(aiplatform.Endpoint.list(filter=filter_text))


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_deploy_makes_a_labelled_dedicated_endpoint(stack_env, tuned) -> None:  # type: ignore[no-untyped-def]
    uri, result = tuned
    assert not result.reused and result.dedicated_endpoint_dns.startswith("127.0.0.1:")
    found = _endpoints(stack_env, 'labels.tune2serve-run="test-run-1"')
    assert [e.resource_name for e in found] == [result.endpoint]
    labels = dict(found[0].gca_resource.labels)
    assert labels["managed-by"] == "tune2serve" and len(labels["tune2serve-manifest"]) == 32
    deployed = found[0].gca_resource.deployed_models
    assert [(d.id, d.model) for d in deployed] == [(result.deployed_model_id, result.model)]


def test_a_second_deploy_of_the_same_export_makes_nothing_new(stack_env, tuned, capsys) -> None:  # type: ignore[no-untyped-def]
    uri, first = tuned
    before = {e.resource_name for e in _endpoints(stack_env)}
    code, out, _ = _cli(capsys, "deploy", uri + "/", "--project", stack_env.project, "--region", stack_env.region,
                        *MACHINE_FLAGS, "--json")
    assert code == 0
    assert json.loads(out) == {"endpoint": first.endpoint, "model": first.model,
                               "deployed_model_id": first.deployed_model_id,
                               "dedicated_endpoint_dns": first.dedicated_endpoint_dns, "reused": True}
    assert {e.resource_name for e in _endpoints(stack_env)} == before


def _refused(stack, capsys, uri: str, expected_code: int, message: str) -> None:  # type: ignore[no-untyped-def]
    before = {e.resource_name for e in _endpoints(stack)}
    code, out, err = _cli(capsys, "deploy", uri, "--project", stack.project, "--region", stack.region,
                          *MACHINE_FLAGS, "--json")
    assert (code, out) == (expected_code, "")
    assert message in err and "Traceback" not in err
    assert {e.resource_name for e in _endpoints(stack)} == before


def test_missing_export_is_refused_before_any_deploy(stack_env, capsys) -> None:  # type: ignore[no-untyped-def]
    _refused(stack_env, capsys, f"gs://{stack_env.bucket}/exports/nothing-here", 1, "no such export")


def test_incomplete_export_is_refused(stack_env, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "config.json").write_text("{}")
    uri = stack_env.upload(tmp_path, "exports/incomplete")
    _refused(stack_env, capsys, uri, 1, "no manifest.json, so this is not a complete export")


def test_export_failing_validation_is_refused(stack_env, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "auto_map": {"AutoModel": "x.Y"}}))
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "files": []}))
    uri = stack_env.upload(tmp_path, "exports/invalid")
    _refused(stack_env, capsys, uri, 1, "validation failed")


def test_incomplete_machine_spec_is_a_usage_error(stack_env, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _cli(capsys, "deploy", f"gs://{stack_env.bucket}/x", "--project", "p", "--region", "r",
                          "--machine-type", "g2-standard-12")
    assert (code, out) == (2, "")
    assert "go together" in err


def test_a_failed_deploy_operation_ends_with_vertex_message_and_no_orphan(stack_env, demo_root, capsys) -> None:  # type: ignore[no-untyped-def]
    from tune2serve.pipelines.local.faults import inject_fault

    uri = exported(stack_env, demo_root, "base")
    inject_fault(stack_env.api_endpoint, "deploy-fails", count=1)
    with pytest.raises(OperationFailedError, match="Vertex AI says: .*injected fault deploy-fails") as info:
        deploy_export(DeploySpec(uri, stack_env.project, stack_env.region, L4, endpoint_display_name="doomed"))
    assert info.value.operation_name and "/operations/" in info.value.operation_name
    assert _endpoints(stack_env, 'display_name="doomed"') == []
    # Rerun after the failure: completed, one endpoint, and --json keeps stdout to one object
    code, out, _ = _cli(capsys, "deploy", uri, "--project", stack_env.project, "--region", stack_env.region,
                        *MACHINE_FLAGS, "--endpoint-display-name", "doomed", "--json")
    assert code == 0 and json.loads(out)["reused"] is False
    assert len(_endpoints(stack_env, 'display_name="doomed"')) == 1
