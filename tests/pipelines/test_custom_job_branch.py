"""The export's custom-job branch (``export_machine_type`` set) runs offline, as the
pipeline-step branch does (tests/pipelines/test_export_fanout.py): GCPC's custom-job task
run by kfp.local on this machine (pipelines/local_custom_job.py) creates a CustomJob on
the local stack's customJobs API, which runs the worker's command here; the export is
byte for byte the single-worker export — under kfp.local directly and as a PipelineJob
submitted to the local Vertex server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import make_adapter
from tune2serve.pipelines.compile import load_spec_dict
from tune2serve.pipelines.local_custom_job import (
    LOCAL_JSON_ESCAPE,
    LOCATION_ENV,
    PROJECT_ENV,
    is_launcher,
    resolve_launcher_args,
    runnable_locally,
)

COMPILED = Path(__file__).resolve().parents[2] / "compiled" / "promote_checkpoint.yaml"
MACHINE, DISK_GB = "n2-highmem-32", 500


def _launcher_input(spec: dict[str, Any], task_root: str) -> dict[str, Any]:
    """The executor input kfp.local gives the custom-job task: the component's inputs
    (defaults, the pipeline's values) and the channels the task was compiled with."""
    inputs = spec["components"]["comp-export-worker-job"]["inputDefinitions"]["parameters"]
    values = {name: p.get("defaultValue") for name, p in inputs.items()}
    values.update(source="gs://b/runs/1", dest="gs://b/export", group={"shards": [0]}, project="null",
                  location="null", service_account="sa@p.iam.gserviceaccount.com")
    values["pipelinechannel--export_machine_type"] = MACHINE
    values["pipelinechannel--export_boot_disk_size_gb"] = DISK_GB
    for task in (t for c in spec["components"].values() for t in c.get("dag", {}).get("tasks", {}).values()):
        if task["componentRef"]["name"] == "comp-export-worker-job":
            values["worker_pool_specs"] = task["inputs"]["parameters"]["worker_pool_specs"]["runtimeValue"]["constant"]
    return {"inputs": {"parameterValues": values},
            "outputs": {"parameters": {"gcp_resources": {"outputFile": f"{task_root}/gcp_resources"}},
                        "outputFile": f"{task_root}/executor_output.json"}}


def test_the_launcher_task_is_swapped_for_one_kfp_local_runs() -> None:
    """Only GCPC's launcher executor changes: to a lightweight component (kfp's own
    executor) carrying the launcher's compiled command line; components, and so every
    task's inputs and outputs, are untouched."""
    spec = load_spec_dict(COMPILED)
    local = runnable_locally(spec)
    executors, swapped = spec["deploymentSpec"]["executors"], local["deploymentSpec"]["executors"]
    launchers = sorted(label for label, e in executors.items() if is_launcher(e))
    assert launchers == ["exec-export-worker-job"]
    assert {k: v for k, v in swapped.items() if k not in launchers} == {k: v for k, v in executors.items()
                                                                         if k not in launchers}
    assert local["root"] == spec["root"]
    # what kfp.local cannot read: the worker's {{$.json_escape[1]}}, and the channels in the
    # task's constant it would resolve to strings (hidden from it wherever they are: the
    # task's constant, the component's default), and the pipeline-context defaults
    holders = {n for n, c in spec["components"].items() if any(
        t["componentRef"]["name"] == "comp-export-worker-job" for t in c.get("dag", {}).get("tasks", {}).values())}
    changed = {n for n in spec["components"] if local["components"][n] != spec["components"][n]}
    assert holders and changed == {"comp-export-worker-job", *holders}
    back = json.loads(json.dumps(local["components"]).replace("{{tune2serve.", "{{$."))
    assert {n: back[n] for n in holders} == {n: spec["components"][n] for n in holders}
    assert LOCAL_JSON_ESCAPE not in json.dumps(spec) and "{{$.json_escape" not in json.dumps(local["components"])
    assert "{{tune2serve.inputs.parameters['pipelinechannel--export_boot_disk_size_gb']}}" in json.dumps(
        [local["components"][n] for n in holders])
    inputs = spec["components"]["comp-export-worker-job"]["inputDefinitions"]["parameters"]
    made_empty = {n for n, p in back["comp-export-worker-job"]["inputDefinitions"]["parameters"].items()
                  if p != inputs[n]}
    assert made_empty == {"project", "location", "persistent_resource_id"}
    assert {inputs[n]["defaultValue"] for n in made_empty} == {
        "{{$.pipeline_google_cloud_project_id}}", "{{$.pipeline_google_cloud_location}}",
        "{{$.pipeline_persistent_resource_id}}"}
    container = swapped["exec-export-worker-job"]["container"]
    assert "kfp.dsl.executor_main" in container["command"][2] and container["args"][-1] == "run_custom_job_launcher"
    (env,) = container["env"]
    compiled = executors["exec-export-worker-job"]["container"]
    assert json.loads(env["value"]) == [*compiled["command"], *compiled["args"]]
    assert runnable_locally(local) == local  # nothing left to swap


def test_the_launcher_line_resolves_as_vertex_resolves_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read back by GCPC's own parser and payload code into the CustomJob the API takes:
    the pipeline's machine type and disk size typed, the worker's command and arguments
    the pipeline-step worker's with the task's executor input, the run's project and
    region where the compiled defaults name the pipeline's."""
    from google.cloud import aiplatform_v1
    from google_cloud_pipeline_components.container.v1.custom_job.remote_runner import (
        insert_system_labels_into_payload,
    )
    from google_cloud_pipeline_components.container.v1.gcp_launcher.utils import json_util, parser_util

    spec = load_spec_dict(COMPILED)
    monkeypatch.setenv(PROJECT_ENV, "acme")
    monkeypatch.setenv(LOCATION_ENV, "europe-west4")
    executor_input = _launcher_input(spec, str(tmp_path))
    container = spec["deploymentSpec"]["executors"]["exec-export-worker-job"]["container"]
    args = resolve_launcher_args([*container["command"], *container["args"]], executor_input)
    _, parsed = parser_util.parse_default_args(args)
    assert (parsed.type, parsed.project, parsed.location) == ("CustomJob", "null", "null")  # launch() reads env then
    assert parsed.gcp_resources == f"{tmp_path}/gcp_resources"
    job = aiplatform_v1.CustomJob(json_util.recursive_remove_empty(
        json.loads(insert_system_labels_into_payload(parsed.payload), strict=False)))
    (worker,) = job.job_spec.worker_pool_specs
    assert (worker.machine_spec.machine_type, worker.disk_spec.boot_disk_size_gb) == (MACHINE, DISK_GB)
    assert job.job_spec.service_account == "sa@p.iam.gserviceaccount.com" and job.labels["managed-by"] == "tune2serve"
    step = spec["deploymentSpec"]["executors"]["exec-export-worker"]["container"]
    assert list(worker.container_spec.command) == step["command"]
    i = list(worker.container_spec.args).index("--executor_input")
    given = json.loads(worker.container_spec.args[i + 1])  # the task's executor input, channels resolved
    values = given["inputs"]["parameterValues"]
    assert values["worker_pool_specs"][0]["machine_spec"]["machine_type"] == MACHINE
    assert values["persistent_resource_id"] == ""  # the pipeline's context: no persistent resource here
    expected = executor_input["inputs"]["parameterValues"]
    assert {k: v for k, v in values.items() if k not in ("worker_pool_specs", "persistent_resource_id")} == {
        k: v for k, v in expected.items() if k not in ("worker_pool_specs", "persistent_resource_id")}
    assert given["outputs"] == executor_input["outputs"]
    # every placeholder resolved, but inside the worker's executor input (the task's
    # inputs as given, where worker_pool_specs holds its own {{$.json_escape[1]}})
    text = json.dumps(type(job).to_dict(job)).replace(json.dumps(worker.container_spec.args[i + 1])[1:-1], "")
    assert "{{$" not in text, text
    assert [a for k, a in enumerate(worker.container_spec.args) if k != i + 1] == [
        a for a in step["args"] if a != "{{$}}"]


def _blobs(bucket: str, prefix: str) -> dict[str, bytes]:
    from tune2serve.components.checkpoint.storage import storage_client

    return {b.name[len(prefix) + 1:]: b.download_as_bytes()
            for b in storage_client().list_blobs(bucket, prefix=prefix + "/")}


def _custom_jobs(stack: Any) -> list[dict[str, Any]]:
    from tune2serve.components.vertex.clients import http_client, target

    vertex = target(stack.project, stack.region)
    with http_client(vertex) as client:
        return list(client.get(f"{vertex.rest_base_url}/v1/{vertex.parent}/customJobs").json().get("customJobs", []))


@pytest.fixture
def branch_inputs(stack_env: Any, tiny_qwen_sharded: Path, tmp_path: Path) -> dict[str, Any]:
    """A LoRA adapter and its base on the stack's bucket, and the single-worker export of
    them to compare with."""
    import uuid

    from tune2serve.components.export.export import export_checkpoint

    run = uuid.uuid4().hex[:8]
    adapter = make_adapter(tiny_qwen_sharded, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    base = stack_env.upload(tiny_qwen_sharded, f"branch-{run}/base")
    source = stack_env.upload(adapter, f"branch-{run}/adapter")
    export_checkpoint(source, f"gs://{stack_env.bucket}/branch-{run}/single", base_model=base, max_shard_size="60KB")
    return {"run": run, "arguments": {
        "source": source, "dest": f"gs://{stack_env.bucket}/branch-{run}/job", "base_model": base,
        "checkpoint": "final", "dtype": "auto", "max_shard_size": "60KB", "export_workers": 2,
        "export_min_worker_size": "1", "export_cpu": "8", "export_memory": "32G", "export_machine_type": MACHINE,
        "export_boot_disk_size_gb": DISK_GB, "export_service_account": ""}}


@pytest.mark.stack
@pytest.mark.slow
def test_kfp_local_runs_the_custom_job_branch_on_the_stack(stack_env: Any, branch_inputs: dict[str, Any],
                                                           tmp_path: Path) -> None:
    from tune2serve.pipelines.kfp_local import run_pipeline
    from tune2serve.pipelines.promote import export_fanout

    before = {j["name"] for j in _custom_jobs(stack_env)}
    events: list[Any] = []
    env = {**stack_env.env, PROJECT_ENV: stack_env.project, LOCATION_ENV: stack_env.region}
    run = run_pipeline(export_fanout.pipeline_spec, branch_inputs["arguments"], pipeline_root=tmp_path / "root",
                       env=env, progress=events.append)
    assert run.succeeded, run.log_path.read_text()[-4000:]
    assert [s.task for s in run.steps] == ["export-plan", "export-worker-job", "export-commit"]
    prefix = f"branch-{branch_inputs['run']}"
    assert _blobs(stack_env.bucket, f"{prefix}/job") == _blobs(stack_env.bucket, f"{prefix}/single")
    jobs = [j for j in _custom_jobs(stack_env) if j["name"] not in before]
    assert len(jobs) == 2 and {j["state"] for j in jobs} == {"JOB_STATE_SUCCEEDED"}  # one per shard group
    for job in jobs:
        (pool,) = job["jobSpec"]["workerPoolSpecs"]
        assert pool["machineSpec"]["machineType"] == MACHINE and pool["diskSpec"]["bootDiskSizeGb"] == DISK_GB
        assert job["labels"]["managed-by"] == "tune2serve" and job["displayName"] == "tune2serve-export-worker"
    resources = [json.loads((f / "gcp_resources").read_text()) for f in run.run_dir.rglob("export-worker-job")]
    assert sorted(r["resources"][0]["resourceUri"].split("/v1/")[1] for r in resources) == sorted(
        j["name"] for j in jobs)
    ends = [e for e in events if e.kind == "end" and e.task == "export-worker-job"]
    assert len(ends) == 2 and all(e.succeeded for e in ends)


@pytest.mark.stack
@pytest.mark.slow
def test_a_pipeline_job_on_the_local_server_runs_the_custom_job_branch(stack_env: Any, branch_inputs: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """Submitted with the SDK like any PipelineJob: the local server's runner resolves the
    job's own project and region for GCPC's task, as Vertex AI does."""
    from kfp import compiler

    from tune2serve.components.vertex.clients import target
    from tune2serve.components.vertex.pipeline_jobs import RunSpec, submit_run, wait_for_run
    from tune2serve.components.vertex.retry import PollPolicy
    from tune2serve.pipelines.promote import export_fanout

    template = tmp_path / "export.yaml"
    compiler.Compiler().compile(export_fanout, str(template))
    vertex = target(stack_env.project, stack_env.region)
    status = submit_run(vertex, RunSpec(str(template), f"gs://{stack_env.bucket}/root", branch_inputs["arguments"],
                                        "export-on-custom-jobs"))
    status = wait_for_run(vertex, status.resource_name, poll=PollPolicy.every(1.0), timeout_s=300)
    assert status.state == "PIPELINE_STATE_SUCCEEDED", status.error
    prefix = f"branch-{branch_inputs['run']}"
    assert _blobs(stack_env.bucket, f"{prefix}/job") == _blobs(stack_env.bucket, f"{prefix}/single")
    log = next(stack_env.home.glob(f"pipelines/pipeline_runs/{status.resource_name.rsplit('/', 1)[1]}/log.txt"))
    ended = r"^\d\d:\d\d:\d\d export-worker-job \[for-loop-1-iteration-\d\] succeeded in \d+\.\d s$"
    assert len(re.findall(ended, log.read_text(), re.M)) == 2  # the runner's progress lines (adjacent or not)
    # the task's own log lines, relayed into the job's log: each job as it is created
    assert len(re.findall(r"created projects/[^/]+/locations/[^/]+/customJobs/\d+\n", log.read_text())) == 2
