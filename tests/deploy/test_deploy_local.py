"""deploy against the local stack, through the real SDK: one tuned deployment for the
module; reruns, refusals, an injected failed operation, a run that died before
labelling, a quota 429, the recommended machine spec and the KFP component around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.demo.deployments import MACHINE_FLAGS, demo_models, exported, stack_environ
from tune2serve.components.deploy.deploy import DeployResult, deploy_export
from tune2serve.components.deploy.request import DeploySpec
from tune2serve.components.vertex.machine_spec import MachineSpec
from tune2serve.components.errors import OperationFailedError, VertexUserError
from tune2serve.cli.main import main

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
    import logging

    try:
        code = main(list(argv))
    finally:  # the CLI bound its log handler to the captured stderr, closed after the test
        logging.getLogger("tune2serve").handlers.clear()
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


def test_incomplete_folder_is_refused_by_validation(stack_env, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "config.json").write_text("{}")
    uri = stack_env.upload(tmp_path, "exports/incomplete")
    _refused(stack_env, capsys, uri, 1, "validation failed")


def test_an_export_damaged_after_it_was_written_is_refused(stack_env, demo_root, capsys) -> None:  # type: ignore[no-untyped-def]
    """A file its manifest lists is gone: the listing no longer matches the manifest."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    uri = _fresh_export(stack_env, demo_root, "damaged")
    client = storage.Client(project=stack_env.project, credentials=AnonymousCredentials())
    client.bucket(stack_env.bucket).blob("exports/damaged/generation_config.json").delete()
    _refused(stack_env, capsys, uri, 1, f"{uri}/generation_config.json: is missing: the export was changed or damaged")


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
    from tune2serve.localstack.faults import inject_fault

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


def _fresh_export(stack, demo_root: Path, name: str) -> str:  # type: ignore[no-untyped-def]
    """The tiny base model exported to its own URI (so: its own ids, nothing deployed)."""
    from tune2serve.components.export.export import export_checkpoint

    base, _ = demo_models(demo_root)
    dest = f"gs://{stack.bucket}/exports/{name}"
    with stack_environ(stack):
        export_checkpoint(str(base), dest)
    return dest


def _models(stack) -> list:  # type: ignore[no-untyped-def]
    from google.cloud import aiplatform

    stack.vertex_init()
    return list(aiplatform.Model.list())


def test_a_run_that_died_before_labelling_is_found_by_its_ids_and_labelled(stack_env, demo_root, capsys) -> None:  # type: ignore[no-untyped-def]
    from tune2serve.components.checkpoint.manifest import read_manifest
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.deploy import deploy as deploy_mod
    from tune2serve.components.deploy import existing
    from tune2serve.components.deploy.request import build_deploy_request, deployment_ids, deployment_labels
    from tune2serve.components.vertex.clients import target
    from tune2serve.components.vertex.operations import wait_for_operation
    from tune2serve.components.vertex.retry import PollPolicy

    uri = _fresh_export(stack_env, demo_root, "died-before-labels")
    manifest = read_manifest(open_folder(uri))
    assert manifest is not None
    ids = deployment_ids(uri, manifest.digest())
    spec = DeploySpec(uri, stack_env.project, stack_env.region, L4)
    vertex = target(stack_env.project, stack_env.region)
    # What the dead run did: the raw :deploy with the ids, waited out, and no labels.
    request = build_deploy_request(spec, L4, ids)
    wait_for_operation(deploy_mod._submit(vertex, spec, request, L4), what="raw deploy", deadline_s=120,
                       policy=PollPolicy(0.5, 2.0))
    endpoint_name = ids.endpoint_name(vertex.parent)
    # A concurrent duplicate :deploy collides on the ids (409), then adopts what exists.
    with pytest.raises(VertexUserError) as conflict:
        deploy_mod._submit(vertex, spec, request, L4)
    assert conflict.value.status_code == 409 and "already exists" in conflict.value.message
    labels = deployment_labels(uri, manifest.digest())
    adopted = existing.adopt(vertex, ids, labels, deadline_s=10, poll=PollPolicy(0.5, 1.0))
    assert adopted.name == endpoint_name and adopted.labels == {}

    endpoints_before, models_before = len(_endpoints(stack_env)), len(_models(stack_env))
    code, out, _ = _cli(capsys, "deploy", uri, "--project", stack_env.project, "--region", stack_env.region,
                        *MACHINE_FLAGS, "--run-id", "rerun", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["reused"] is True
    assert doc["endpoint"] == endpoint_name and doc["model"].split("@")[0] == ids.model_name(vertex.parent)
    assert (len(_endpoints(stack_env)), len(_models(stack_env))) == (endpoints_before, models_before)
    want = deployment_labels(uri, manifest.digest(), "rerun")
    [labelled] = _endpoints(stack_env, 'labels.tune2serve-run="rerun"')
    assert labelled.resource_name == endpoint_name and dict(labelled.gca_resource.labels) == want
    from google.cloud import aiplatform

    assert dict(aiplatform.Model(ids.model_name(vertex.parent)).gca_resource.labels) == want


def test_the_module_deployment_has_the_deterministic_ids(stack_env, tuned) -> None:  # type: ignore[no-untyped-def]
    from tune2serve.components.checkpoint.manifest import read_manifest
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.deploy.request import deployment_ids

    uri, result = tuned
    manifest = read_manifest(open_folder(uri))
    assert manifest is not None
    ids = deployment_ids(uri, manifest.digest())
    parent = f"projects/{stack_env.project}/locations/{stack_env.region}"
    assert result.endpoint == ids.endpoint_name(parent)
    assert result.model.split("@")[0] == ids.model_name(parent)


def _faults(stack) -> list[dict]:  # type: ignore[no-untyped-def]
    import urllib.request

    with urllib.request.urlopen(f"{stack.api_endpoint}/_local/status", timeout=10) as resp:
        return list(json.loads(resp.read())["faults"])


@pytest.fixture(scope="module")
def quota_refused(local_stack, demo_root: Path) -> tuple[str, tuple[int, str, str], list[dict], tuple[int, int]]:  # type: ignore[no-untyped-def]
    """A deploy refused by 429 on :deploy (one more 429 armed than the retry policy's
    attempts): (export, (exit code, stdout, stderr), faults left, (endpoints, models) added)."""
    from tune2serve.components.deploy.deploy import SUBMIT_RETRY
    from tune2serve.localstack.faults import inject_fault

    uri = _fresh_export(local_stack, demo_root, "quota")
    with stack_environ(local_stack):
        before = len(_endpoints(local_stack)), len(_models(local_stack))
        inject_fault(local_stack.api_endpoint, "control-429", count=SUBMIT_RETRY.max_attempts + 1, target=":deploy")
        with pytest.MonkeyPatch.context():
            import io
            from contextlib import redirect_stderr, redirect_stdout

            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                code = main(["deploy", uri, "--project", local_stack.project, "--region", local_stack.region,
                             *MACHINE_FLAGS, "--json"])
        left = _faults(local_stack)
        inject_fault(local_stack.api_endpoint, "clear")
        after = len(_endpoints(local_stack)), len(_models(local_stack))
    return uri, (code, out.getvalue(), err.getvalue()), left, (after[0] - before[0], after[1] - before[1])


def test_quota_429_on_deploy_is_retried_a_bounded_number_of_times_then_explained(quota_refused) -> None:  # type: ignore[no-untyped-def]
    _, (code, out, err), left, added = quota_refused
    assert (code, out) == (1, "")
    assert "refused to deploy" in err and "'Custom Model Serving' quota for 1 x NVIDIA_L4 on g2-standard-12" in err
    assert "Nothing was deployed" in err and "Traceback" not in err
    # max_attempts answers were taken, the one extra 429 is still armed: bounded retries
    assert [(f["kind"], f["count"]) for f in left] == [("control-429", 1)]
    assert added == (0, 0)


def test_no_machine_flags_deploys_on_the_spec_vertex_recommends(stack_env, quota_refused, capsys) -> None:  # type: ignore[no-untyped-def]
    from vertexai.preview import model_garden

    uri = quota_refused[0]
    stack_env.vertex_init()
    import re

    # the SDK's own rendering of recommendSpec (text, Vertex's order)
    options = str(model_garden.CustomModel(gcs_uri=uri).list_deploy_options())
    first = re.search(r'machine_type="([^"]+)",\s+accelerator_type="(\w+)",\s+accelerator_count=(\d+)', options)
    assert first is not None, options
    code, out, err = _cli(capsys, "deploy", uri, "--project", stack_env.project, "--region", stack_env.region, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["reused"] is False
    [deployed] = [d for e in _endpoints(stack_env) if e.resource_name == doc["endpoint"]
                  for d in e.gca_resource.deployed_models]
    spec = deployed.dedicated_resources.machine_spec
    # the tiny model fits every spec, so the first recommendation is the one taken
    assert (spec.machine_type, spec.accelerator_type.name, str(spec.accelerator_count)) == first.groups()


def test_kfp_component_outputs_gcpc_artifacts(stack_env, tuned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from google_cloud_pipeline_components.types.artifact_types import VertexEndpoint, VertexModel

    from tune2serve.components.deploy.component import deploy

    uri, first = tuned
    model = VertexModel(name="vertex_model", uri=str(tmp_path / "model"), metadata={})
    endpoint = VertexEndpoint(name="vertex_endpoint", uri=str(tmp_path / "endpoint"), metadata={})
    outputs = deploy.python_func(
        export_uri=uri, project=stack_env.project, region=stack_env.region, machine_type="g2-standard-12",
        accelerator_type="NVIDIA_L4", accelerator_count=1, min_replica_count=1, max_replica_count=1,
        endpoint_display_name="", model_display_name="", enable_private_service_connect=False,
        psc_project_allowlist=[], deploy_timeout_s=600, run_id="", vertex_model=model, vertex_endpoint=endpoint)
    assert tuple(outputs) == (first.endpoint, first.model, first.deployed_model_id, first.dedicated_endpoint_dns)
    assert outputs._fields == ("endpoint", "model", "deployed_model_id", "dedicated_endpoint_dns")
    base = f"https://{stack_env.region}-aiplatform.googleapis.com/v1/"
    assert (endpoint.uri, endpoint.metadata) == (base + first.endpoint, {"resourceName": first.endpoint})
    assert (model.uri, model.metadata) == (base + first.model, {"resourceName": first.model})
