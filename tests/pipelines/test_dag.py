"""The compiled DAG, read back with kfp: discover and its no-op gate, the five steps in
order, the validation gate, the promotion record, the exit handler with finalize, one
image, documented parameters, side effects uncached."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2

from tune2serve.components.image import DEFAULT_IMAGE
from tune2serve.pipelines.compile import gcpc_launcher_image, load_spec_dict, step_images

GCPC_IMAGE_TAG = gcpc_launcher_image()

COMPILED = Path(__file__).resolve().parents[2] / "compiled" / "promote_checkpoint.yaml"
STEPS = ["export", "validate", "deploy", "smoke-test", "verify-traffic"]
EXPORT_STEPS = ["export-plan", "export-worker", "export-commit"]  # the export sub-pipeline's steps
WORKER_JOB = "export-worker-job"  # the worker as a custom job, when export_machine_type is set
EXECUTORS = {"discover", *STEPS[1:], *EXPORT_STEPS, WORKER_JOB, "quality-gate", "record-promotion", "skip", "finalize",
             "reject"}
ON_STEP = "inputs.parameter_values['pipelinechannel--export_machine_type'] == ''"
ON_JOB = f"!({ON_STEP})"
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


def branches_of(spec: pipeline_spec_pb2.PipelineSpec, gate: Any) -> dict[str, Any]:
    """condition → branch task of a gate sub-pipeline (dsl.If + dsl.Else compile to one
    branches DAG inside it)."""
    (wrapper,) = dag_of(spec, gate).tasks.values()
    return {t.trigger_policy.condition: t for t in dag_of(spec, wrapper).tasks.values()}


def body_of(spec: pipeline_spec_pb2.PipelineSpec) -> Any:
    return dag_of(spec, spec.root.dag.tasks["exit-handler-1"]).tasks


def due_branch(spec: pipeline_spec_pb2.PipelineSpec) -> Any:
    return dag_of(spec, branches_of(spec, body_of(spec)["promote-if-due"])[
        "inputs.parameter_values['pipelinechannel--proceed'] == true"]).tasks


def valid_branch(spec: pipeline_spec_pb2.PipelineSpec) -> Any:
    return dag_of(spec, branches_of(spec, due_branch(spec)["deploy-if-valid"])[
        "inputs.parameter_values['pipelinechannel--passed'] == true"]).tasks


def test_exit_handler_runs_finalize_with_the_final_status(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    root = spec.root.dag.tasks
    assert set(root) == {"exit-handler-1", "finalize"}
    fin = root["finalize"]
    assert fin.trigger_policy.strategy == ALL_DONE
    assert list(fin.dependent_tasks) == ["exit-handler-1"]
    assert fin.inputs.parameters["status"].task_final_status.producer_task == "exit-handler-1"
    assert fin.task_info.name.startswith("Finalize")
    assert fin.retry_policy.max_retry_count == 2
    body = body_of(spec)
    assert set(body) == {"discover", "promote-if-due"}
    assert list(body["promote-if-due"].dependent_tasks) == ["discover"]


def test_everything_is_gated_on_discover_proceed(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    gate = body_of(spec)["promote-if-due"]
    for name in ("proceed", "reason", "source", "export_dest"):  # export reads what discover resolved
        channel = gate.inputs.parameters[name].task_output_parameter
        assert (channel.producer_task, channel.output_parameter_key) == ("discover", name)
    discover = body_of(spec)["discover"]
    assert discover.inputs.parameters["source"].component_input_parameter == "pipelinechannel--source"
    assert discover.inputs.parameters["export_dest"].component_input_parameter == "pipelinechannel--export_dest"
    branches = branches_of(spec, gate)
    assert set(branches) == {"inputs.parameter_values['pipelinechannel--proceed'] == true",
                             "!(inputs.parameter_values['pipelinechannel--proceed'] == true)"}
    due = due_branch(spec)
    assert set(due) == {"export", "validate", "deploy-if-valid"}
    assert list(due["validate"].dependent_tasks) == ["export"]
    assert due["export"].inputs.parameters["source"].component_input_parameter == "pipelinechannel--source"
    assert due["export"].inputs.parameters["dest"].component_input_parameter == "pipelinechannel--export_dest"
    (no_op,) = dag_of(spec, branches["!(inputs.parameter_values['pipelinechannel--proceed'] == true)"]).tasks.values()
    assert no_op.component_ref.name == "comp-skip"
    assert no_op.inputs.parameters["reason"].component_input_parameter == "pipelinechannel--reason"


def test_deploy_is_gated_on_validate_passed(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    gate = due_branch(spec)["deploy-if-valid"]
    passed = gate.inputs.parameters["passed"].task_output_parameter
    assert (passed.producer_task, passed.output_parameter_key) == ("validate", "passed")
    branches = branches_of(spec, gate)
    assert set(branches) == {"inputs.parameter_values['pipelinechannel--passed'] == true",
                             "!(inputs.parameter_values['pipelinechannel--passed'] == true)"}
    gated = valid_branch(spec)
    assert set(gated) == {"deploy", "smoke-test", "quality-gate", "verify-traffic", "record-promotion"}
    assert list(gated["smoke-test"].dependent_tasks) == ["deploy"]
    assert set(gated["verify-traffic"].dependent_tasks) == {"deploy", "quality-gate"}
    assert set(gated["record-promotion"].dependent_tasks) == {"deploy", "quality-gate", "verify-traffic"}
    rejected = dag_of(spec, branches["!(inputs.parameter_values['pipelinechannel--passed'] == true)"]).tasks
    assert set(rejected) == {"reject"}
    endpoint = gated["smoke-test"].inputs.parameters["endpoint"].task_output_parameter
    assert (endpoint.producer_task, endpoint.output_parameter_key) == ("deploy", "endpoint")
    model = gated["verify-traffic"].inputs.parameters["model"].task_output_parameter
    assert (model.producer_task, model.output_parameter_key) == ("deploy", "model")


def test_the_promotion_is_recorded_after_verify_traffic(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    record = valid_branch(spec)["record-promotion"].inputs.parameters
    outcome = record["outcome"].task_output_parameter
    assert (outcome.producer_task, outcome.output_parameter_key) == ("verify-traffic", "outcome")
    model = record["model"].task_output_parameter
    assert (model.producer_task, model.output_parameter_key) == ("deploy", "model")
    assert record["export_uri"].component_input_parameter == "pipelinechannel--export_uri"
    assert record["production_endpoint"].component_input_parameter == "pipelinechannel--production_endpoint"


def test_the_quality_gate_sits_between_smoke_test_and_verify_traffic(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    """The candidate (deploy's endpoint) against the serving model (production_endpoint) on
    the eval_set parameter, after smoke-test and before verify-traffic; never cached."""
    gated = valid_branch(spec)
    gate = gated["quality-gate"]
    assert set(gate.dependent_tasks) == {"deploy", "smoke-test"} and "quality-gate" in gated["verify-traffic"].dependent_tasks
    candidate = gate.inputs.parameters["candidate_endpoint"].task_output_parameter
    assert (candidate.producer_task, candidate.output_parameter_key) == ("deploy", "endpoint")
    for name, channel in (("baseline_endpoint", "production_endpoint"), ("eval_set", "eval_set"),
                          ("judge_endpoint", "judge_endpoint"), ("judge_model", "judge_model"),
                          ("eval_margin", "eval_margin"), ("eval_min_pass_rate", "eval_min_pass_rate")):
        assert gate.inputs.parameters[name].component_input_parameter == f"pipelinechannel--{channel}"
    assert not gate.caching_options.enable_cache and gate.task_info.name.startswith("Quality gate")
    params = spec.root.input_definitions.parameters
    assert params["eval_set"].default_value.string_value == ""
    assert params["eval_delta"].default_value.number_value == 0.05


def export_tasks(spec: pipeline_spec_pb2.PipelineSpec) -> dict[str, Any]:
    tasks = dict(dag_of(spec, due_branch(spec)["export"]).tasks)
    (loop,) = [n for n in tasks if n.startswith("for-loop")]
    tasks.update(dag_of(spec, tasks[loop]).tasks)
    for branch in branches_of(spec, tasks["export-group"]).values():
        tasks.update(dag_of(spec, branch).tasks)
    return tasks


def test_export_fans_out_over_shard_groups(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    """plan → ParallelFor(one worker per group the plan returns) → commit, which waits for
    every worker; workers and commit sized by the export_cpu / export_memory parameters."""
    outer = dag_of(spec, due_branch(spec)["export"]).tasks
    (loop_name,) = [n for n in outer if n.startswith("for-loop")]
    assert set(outer) == {"export-plan", loop_name, "export-commit"}
    loop = outer[loop_name]
    assert list(loop.dependent_tasks) == ["export-plan"]
    assert loop.parameter_iterator.items.input_parameter == "pipelinechannel--export-plan-Output"
    assert list(outer["export-commit"].dependent_tasks) == [loop_name]
    group = dag_of(spec, loop).tasks["export-group"]
    assert group.inputs.parameters["group"].component_input_parameter.endswith("-loop-item")
    branches = branches_of(spec, group)
    assert set(branches) == {ON_STEP, ON_JOB}
    (worker,) = dag_of(spec, branches[ON_STEP]).tasks.values()
    assert worker.inputs.parameters["group"].component_input_parameter == "pipelinechannel--group"
    assert outer["export-plan"].inputs.parameters["workers"].component_input_parameter == "export_workers"
    resources = {name.removeprefix("exec-"): e["container"].get("resources", {})
                 for name, e in load_spec_dict(COMPILED)["deploymentSpec"]["executors"].items()}
    for step in ("export-worker", "export-commit"):
        assert "export_cpu" in resources[step]["resourceCpuLimit"]
        assert "export_memory" in resources[step]["resourceMemoryLimit"]
    params = spec.root.input_definitions.parameters
    assert params["export_workers"].default_value.number_value == 8
    assert params["export_cpu"].default_value.string_value == "8"


def test_step_settings(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    no_op = branches_of(spec, body_of(spec)["promote-if-due"])[
        "!(inputs.parameter_values['pipelinechannel--proceed'] == true)"]
    tasks = {**body_of(spec), **due_branch(spec), **valid_branch(spec), **dag_of(spec, no_op).tasks,
             "finalize": spec.root.dag.tasks["finalize"]}
    tasks.update(export_tasks(spec))
    for name in [*STEPS[1:], *EXPORT_STEPS, "discover", "record-promotion", "skip", "finalize"]:
        assert not tasks[name].caching_options.enable_cache, f"{name} must not be served from the cache"
        assert tasks[name].task_info.name and tasks[name].task_info.name != name, f"{name} has no display name"
    assert tasks["deploy"].retry_policy.max_retry_count == 1
    assert tasks["discover"].retry_policy.max_retry_count == 1
    assert tasks["smoke-test"].retry_policy.max_retry_count == 0
    assert tasks["verify-traffic"].retry_policy.max_retry_count == 0
    for name in ("deploy", "verify-traffic", "record-promotion", "finalize"):  # the run id ties them together
        run_id = tasks[name].inputs.parameters["run_id"].runtime_value.constant.string_value
        assert run_id == "{{$.pipeline_job_name}}"


def test_every_executor_uses_the_one_image(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    """Every step runs the one image; the custom-job worker's launcher is GCPC's own
    image, and the job it submits runs the one image too."""
    compiled = load_spec_dict(COMPILED)
    executors = compiled["deploymentSpec"]["executors"]
    names = {n.removeprefix("exec-") for n in executors}
    assert names == EXECUTORS
    assert step_images(compiled) == {DEFAULT_IMAGE}
    launcher = executors.pop(f"exec-{WORKER_JOB}")["container"]
    assert launcher["image"] == GCPC_IMAGE_TAG
    assert {e["container"]["image"] for e in executors.values()} == {DEFAULT_IMAGE}
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
    assert spec.pipeline_info.description.startswith("Required: source, export_dest, project (every other ")
    assert "Promotes a fine-tuned checkpoint" in spec.pipeline_info.description


def test_artifact_types_reach_the_ui(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    def outputs(component: str) -> dict[str, str]:
        arts = spec.components[component].output_definitions.artifacts
        return {name: a.artifact_type.schema_title for name, a in arts.items()}

    assert outputs("comp-export-commit") == {"model": "system.Model"}
    assert spec.components["comp-discover"].output_definitions.parameters.keys() == {
        "proceed", "source", "export_dest", "reason"}
    assert outputs("comp-validate") == {"report_md": "system.Markdown", "report_html": "system.HTML",
                                        "metrics": "system.Metrics"}
    assert outputs("comp-deploy") == {"vertex_model": "google.VertexModel", "vertex_endpoint": "google.VertexEndpoint"}
    assert outputs("comp-verify-traffic") == {"metrics": "system.Metrics", "report_md": "system.Markdown",
                                              "report_html": "system.HTML"}


def _resolved(value: Any, params: dict[str, Any]) -> Any:
    """``value`` with every string that is one input placeholder replaced by the typed
    parameter, as Vertex AI resolves the channels KFP compiles into a nested input
    (GCPC's dynamic machine parameters: machine type, accelerator count)."""
    if isinstance(value, dict):
        return {k: _resolved(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, params) for v in value]
    match = re.fullmatch(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}", value) if isinstance(value, str) else None
    return params[match.group(1)] if match else value


def test_a_machine_type_runs_the_worker_as_a_custom_job(spec: pipeline_spec_pb2.PipelineSpec) -> None:
    """With export_machine_type set, the worker runs as GCPC's custom job on that machine
    with export_boot_disk_size_gb of disk, running the same container, command and
    arguments as the pipeline-step worker. The payload the launcher would send, resolved
    as Vertex AI resolves it, is read by GCPC's own launcher code into the CustomJob
    message the API takes."""
    from google.cloud import aiplatform_v1
    from google_cloud_pipeline_components.container.v1.custom_job.remote_runner import (
        insert_system_labels_into_payload,
    )
    from google_cloud_pipeline_components.container.v1.gcp_launcher.utils import json_util

    compiled = load_spec_dict(COMPILED)
    tasks = export_tasks(spec)
    job_task = tasks[WORKER_JOB]
    assert job_task.inputs.parameters["service_account"].component_input_parameter == (
        "pipelinechannel--export_service_account")
    assert not job_task.caching_options.enable_cache
    group = compiled["components"][tasks["export-group"].component_ref.name]
    assert group["inputDefinitions"]["parameters"]["export_boot_disk_size_gb"]["parameterType"] == "NUMBER_INTEGER"
    params = spec.root.input_definitions.parameters
    assert params["export_machine_type"].default_value.string_value == ""  # kfp.local runs the pipeline-step branch
    assert params["export_boot_disk_size_gb"].default_value.number_value == 100

    (pool,) = json_format.MessageToDict(job_task.inputs.parameters["worker_pool_specs"].runtime_value.constant)
    step = compiled["deploymentSpec"]["executors"]["exec-export-worker"]["container"]
    assert pool["container_spec"]["image_uri"] == step["image"] == DEFAULT_IMAGE
    assert pool["container_spec"]["command"] == step["command"]
    assert pool["container_spec"]["args"] == [a.replace("{{$}}", "{{$.json_escape[1]}}") for a in step["args"]]

    launcher = compiled["deploymentSpec"]["executors"][f"exec-{WORKER_JOB}"]["container"]["args"]
    inputs = compiled["components"][f"comp-{WORKER_JOB}"]["inputDefinitions"]["parameters"]
    values = {name: p.get("defaultValue") for name, p in inputs.items()}
    values["worker_pool_specs"] = _resolved([pool], {"pipelinechannel--export_machine_type": "n2-highmem-32",
                                                     "pipelinechannel--export_boot_disk_size_gb": 500})
    values["service_account"] = "export@acme.iam.gserviceaccount.com"

    def text(m: re.Match[str]) -> str:
        value = values[m.group(1)]
        return value if isinstance(value, str) else json.dumps(value)

    payload = re.sub(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}", text, launcher[launcher.index("--payload") + 1])
    job = aiplatform_v1.CustomJob(json_util.recursive_remove_empty(json.loads(insert_system_labels_into_payload(payload))))
    (worker,) = job.job_spec.worker_pool_specs
    assert worker.machine_spec.machine_type == "n2-highmem-32"
    assert worker.disk_spec.boot_disk_size_gb == 500
    assert worker.container_spec.image_uri == DEFAULT_IMAGE
    assert job.job_spec.service_account == "export@acme.iam.gserviceaccount.com"
    assert job.labels["managed-by"] == "tune2serve"
