"""The compiled DAG, read back with kfp: five steps in order, the validation gate, the
exit handler with finalize, one image, documented parameters, side effects uncached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2

from tune2serve.components.image import DEFAULT_IMAGE
from tune2serve.pipelines.compile import load_spec_dict

COMPILED = Path(__file__).resolve().parents[2] / "compiled" / "promote_checkpoint.yaml"
STEPS = ["export", "validate", "deploy", "smoke-test", "verify-traffic"]
ALL_DONE = pipeline_spec_pb2.PipelineTaskSpec.TriggerPolicy.TriggerStrategy.ALL_UPSTREAM_TASKS_COMPLETED


@pytest.fixture(scope="module")
def spec() -> pipeline_spec_pb2.PipelineSpec:
    return json_format.ParseDict(load_spec_dict(COMPILED), pipeline_spec_pb2.PipelineSpec())


def dag_of(spec: pipeline_spec_pb2.PipelineSpec, task: Any) -> Any:
    return spec.components[task.component_ref.name].dag


def test_kfp_loads_it_as_a_pipeline() -> None:
    pipeline = components.load_component_from_file(str(COMPILED))
    assert pipeline.name == "promote-checkpoint"
    assert {"source", "export_dest", "project", "region", "golden", "production_endpoint"} <= set(
        pipeline.component_spec.inputs)


def test_exit_handler_runs_finalize_with_the_final_status(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    root = spec.root.dag.tasks
    assert set(root) == {"exit-handler-1", "finalize"}
    fin = root["finalize"]
    assert fin.trigger_policy.strategy == ALL_DONE
    assert list(fin.dependent_tasks) == ["exit-handler-1"]
    assert fin.inputs.parameters["status"].task_final_status.producer_task == "exit-handler-1"
    assert fin.task_info.name.startswith("Finalize")
    assert fin.retry_policy.max_retry_count == 2
    body = dag_of(spec, root["exit-handler-1"]).tasks
    assert set(body) == {"export", "validate", "deploy-if-valid"}
    assert list(body["validate"].dependent_tasks) == ["export"]


def test_deploy_is_gated_on_validate_passed(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    body = dag_of(spec, spec.root.dag.tasks["exit-handler-1"]).tasks
    gate = body["deploy-if-valid"]
    passed = gate.inputs.parameters["passed"].task_output_parameter
    assert (passed.producer_task, passed.output_parameter_key) == ("validate", "passed")
    (wrapper,) = dag_of(spec, gate).tasks.values()  # dsl.If + dsl.Else compile to one branches DAG
    branches = dag_of(spec, wrapper).tasks
    conditions = {t.trigger_policy.condition: name for name, t in branches.items()}
    assert conditions == {
        "inputs.parameter_values['pipelinechannel--passed'] == true": "condition-2",
        "!(inputs.parameter_values['pipelinechannel--passed'] == true)": "condition-3",
    }
    gated = dag_of(spec, branches["condition-2"]).tasks
    assert set(gated) == {"deploy", "smoke-test", "verify-traffic"}
    assert list(gated["smoke-test"].dependent_tasks) == ["deploy"]
    assert set(gated["verify-traffic"].dependent_tasks) == {"deploy", "smoke-test"}
    assert set(dag_of(spec, branches["condition-3"]).tasks) == {"reject"}
    endpoint = gated["smoke-test"].inputs.parameters["endpoint"].task_output_parameter
    assert (endpoint.producer_task, endpoint.output_parameter_key) == ("deploy", "endpoint")
    model = gated["verify-traffic"].inputs.parameters["model"].task_output_parameter
    assert (model.producer_task, model.output_parameter_key) == ("deploy", "model")


def test_step_settings(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    body = dag_of(spec, spec.root.dag.tasks["exit-handler-1"]).tasks
    (wrapper,) = dag_of(spec, body["deploy-if-valid"]).tasks.values()
    gated = dag_of(spec, dag_of(spec, wrapper).tasks["condition-2"]).tasks
    tasks = {**body, **gated, "finalize": spec.root.dag.tasks["finalize"]}
    for name in [*STEPS, "finalize"]:
        assert not tasks[name].caching_options.enable_cache, f"{name} must not be served from the cache"
        assert tasks[name].task_info.name and tasks[name].task_info.name != name, f"{name} has no display name"
    assert tasks["deploy"].retry_policy.max_retry_count == 1
    assert tasks["smoke-test"].retry_policy.max_retry_count == 0
    assert tasks["verify-traffic"].retry_policy.max_retry_count == 0
    for name in ("deploy", "finalize"):  # labels tie resources to the run
        run_id = tasks[name].inputs.parameters["run_id"].runtime_value.constant.string_value
        assert run_id == "{{$.pipeline_job_name}}"


def test_every_executor_uses_the_one_image(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    executors = load_spec_dict(COMPILED)["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {DEFAULT_IMAGE}
    names = {n.removeprefix("exec-") for n in executors}
    assert names == {*STEPS, "finalize", "reject"}
    for e in executors.values():  # lightweight components: kfp.local's SubprocessRunner runs them
        assert "kfp.dsl.executor_main" in " ".join(e["container"]["command"])


def test_every_parameter_is_documented(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    params = spec.root.input_definitions.parameters
    assert len(params) >= 20
    undocumented = [name for name, p in params.items() if len(p.description) < 15]
    assert undocumented == []
    assert "tuningJobs" in params["source"].description
    assert params["region"].default_value.string_value == "us-central1"
    assert params["verify_checksums"].default_value.bool_value is False
    assert spec.pipeline_info.description.startswith("Promotes a fine-tuned checkpoint")


def test_artifact_types_reach_the_ui(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    def outputs(component: str) -> dict[str, str]:
        arts = spec.components[component].output_definitions.artifacts
        return {name: a.artifact_type.schema_title for name, a in arts.items()}

    assert outputs("comp-export") == {"model": "system.Model"}
    assert outputs("comp-validate") == {"report_md": "system.Markdown", "report_html": "system.HTML",
                                        "metrics": "system.Metrics"}
    assert outputs("comp-deploy") == {"vertex_model": "google.VertexModel", "vertex_endpoint": "google.VertexEndpoint"}
    assert outputs("comp-verify-traffic") == {"metrics": "system.Metrics", "report_md": "system.Markdown",
                                              "report_html": "system.HTML"}
