"""``tune2serve submit``, the tuning-job trigger and ``tune2serve schedule`` against the
real local stack (`tune2serve local up`: fake-gcs-server, the local Vertex server, model
servers), not the test-only loopback server: the local Vertex server accepts the
pipelineJobs/schedules requests (strict protos) and runs each job with kfp.local.

One module-scoped story, one full promotion in all (model servers are slow):
1. submit --wait --json promotes the demo's tuned adapter; the endpoint answers a golden prompt;
2. the trigger submits one run for a succeeded tuning job (cancelled at once: no second
   promotion), nothing for a redelivery of the same event, nothing for a failed job;
3. a schedule is created, listed, paused, resumed, fired by the admin tick, and deleted;
   with no completed tuning output under its prefix the run is a quick no-op.
At the end every run this module started has ended and what it deployed is deleted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tune2serve.cli.main import main
from tune2serve.pipelines.kfp_local import environment

pytestmark = [pytest.mark.slow, pytest.mark.stack]

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "compiled" / "promote_checkpoint.yaml"
EVENTS = REPO / "docs" / "sample_events"
SUCCEEDED, CANCELLED = "PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_CANCELLED"
PROMPT, ANSWER = "what is the capital of france", "paris"


def vertex(local_stack: Any) -> Any:
    from tune2serve.components.vertex.clients import init_sdk, target

    v = target(local_stack.project, local_stack.region)
    init_sdk(v)
    return v


def deployed(local_stack: Any) -> tuple[set[str], set[str]]:
    """(endpoint names, model names) on the stack, listed with the real SDK."""
    from google.cloud import aiplatform

    vertex(local_stack)
    return ({e.resource_name for e in aiplatform.Endpoint.list()},
            {m.resource_name for m in aiplatform.Model.list()})


def pipeline_jobs(local_stack: Any) -> dict[str, str]:
    """Every pipeline job on the stack (name → state), listed with the real SDK."""
    from google.cloud import aiplatform

    vertex(local_stack)
    return {j.resource_name: j.state.name for j in aiplatform.PipelineJob.list()}


def wait_done(local_stack: Any, name: str, timeout_s: float = 600.0) -> Any:
    from tune2serve.components.vertex.pipeline_jobs import wait_for_run
    from tune2serve.components.vertex.retry import PollPolicy

    return wait_for_run(vertex(local_stack), name, poll=PollPolicy.every(1.0), timeout_s=timeout_s)


@pytest.fixture(scope="module")
def prefix() -> str:
    """This module's own folder of the session-wide bucket."""
    return f"t2s-cloud-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def ledger(local_stack: Any) -> Iterator[dict[str, Any]]:
    """What exists before the module; at its end, every run it started that has not ended
    is cancelled and waited out, its schedules deleted, and the endpoints and models that
    appeared undeployed and deleted, so nothing keeps loading the shared machine."""
    with environment(local_stack.env):
        before = deployed(local_stack)
    told: dict[str, Any] = {"jobs": set(), "schedules": set()}
    yield told
    from google.cloud import aiplatform

    with environment(local_stack.env):
        vertex(local_stack)
        for name in told["schedules"]:
            with contextlib.suppress(Exception):
                aiplatform.PipelineJobSchedule.get(name).delete()
        states = pipeline_jobs(local_stack)
        for name in sorted(told["jobs"]):
            if states.get(name) not in (None, SUCCEEDED, CANCELLED, "PIPELINE_STATE_FAILED"):
                with contextlib.suppress(Exception):
                    aiplatform.PipelineJob.get(name).cancel()
                wait_done(local_stack, name, timeout_s=120)
        endpoints, models = deployed(local_stack)
        for name in sorted(endpoints - before[0]):
            endpoint = aiplatform.Endpoint(name)
            endpoint.undeploy_all()
            endpoint.delete()
        for name in sorted(models - before[1]):
            aiplatform.Model(name).delete()


@pytest.fixture(scope="module")
def demo(local_stack: Any, prefix: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The demo's tiny base model and tuned LoRA adapter (trained once), on the stack's GCS;
    the adapter also as a Vertex managed-tuning output tree, for the trigger."""
    from tune2serve.demo.tiny_models import make_tiny_model
    from tune2serve.demo.tuned_adapter import make_tuned_adapter

    root = tmp_path_factory.mktemp("cloud-stack-models")
    base = make_tiny_model(root / "base")
    adapter = make_tuned_adapter(base, root / "adapter")
    with environment(local_stack.env):
        return {"base": local_stack.upload(base, f"{prefix}/base"),
                "adapter": local_stack.upload(adapter, f"{prefix}/tuned-adapter"),
                "tuning_output": local_stack.upload(adapter, f"{prefix}/tuning-42/postprocess/node-0/checkpoints/final")
                .removesuffix("/postprocess/node-0/checkpoints/final")}


def ask_chat(local_stack: Any, endpoint: str) -> str:
    """One chat completion through the endpoint's dedicated DNS (HTTPS, the local CA)."""
    import ssl

    import httpx
    from google.cloud import aiplatform

    vertex(local_stack)
    dns = aiplatform.Endpoint(endpoint).gca_resource.dedicated_endpoint_dns
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16, "temperature": 0}
    response = httpx.post(f"https://{dns}/v1beta1/{endpoint}/chat/completions", json=body, timeout=60,
                          verify=ssl.create_default_context(cafile=local_stack.env["REQUESTS_CA_BUNDLE"]))
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


def test_submit_runs_the_real_pipeline_on_the_stack_and_the_model_serves(
        stack_env: Any, local_stack: Any, demo: dict[str, str], prefix: str, ledger: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    from google.cloud import aiplatform

    from tune2serve.demo.tuned_adapter import golden_jsonl

    bucket = f"gs://{local_stack.bucket}/{prefix}"
    job_id = f"submit-{uuid.uuid4().hex[:8]}"
    name = f"projects/{local_stack.project}/locations/{local_stack.region}/pipelineJobs/{job_id}"
    ledger["jobs"].add(name)
    before = deployed(local_stack)

    code = main(["submit", "--project", local_stack.project, "--region", local_stack.region,
                 "--pipeline-root", f"{bucket}/root", "--template", str(TEMPLATE), "--job-id", job_id,
                 "--param", f"source={demo['adapter']}", "--param", f"base_model={demo['base']}",
                 "--param", f"export_dest={bucket}/export", "--param", f"golden={golden_jsonl()}",
                 "--wait", "--poll", "1", "--timeout", "900", "--json"])

    out = json.loads(capsys.readouterr().out)
    assert (code, out["ok"], out["state"], out["error"]) == (0, True, SUCCEEDED, None), out
    assert out["pipeline_job"] == name
    assert out["parameters"]["project"] == local_stack.project  # filled from --project
    endpoints, models = deployed(local_stack)
    [endpoint] = endpoints - before[0]  # the run deployed one endpoint and one model
    [model] = models - before[1]
    assert ANSWER in ask_chat(local_stack, endpoint).lower()
    prediction = aiplatform.Endpoint(endpoint).predict(
        instances=[{"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16, "temperature": 0}],
        use_dedicated_endpoint=True)
    assert ANSWER in str(prediction.predictions[0]).lower()
    assert prediction.deployed_model_id == aiplatform.Endpoint(endpoint).list_models()[0].id
    assert aiplatform.Endpoint(endpoint).list_models()[0].model == model


def _event(sample: str, tuning_job_id: str, project: str, region: str, output_uri: str | None) -> dict[str, Any]:
    """A sample event from docs/sample_events/ about our tuning job and its output."""
    event = json.loads((EVENTS / sample).read_text())
    entry = json.loads(base64.b64decode(event["data"]["message"]["data"]))
    entry["resource"]["labels"].update(tuning_job_id=tuning_job_id, resource_container=project, location=region)
    if output_uri is not None:
        entry["jsonPayload"]["outputUri"] = output_uri
    event["data"]["message"]["data"] = base64.b64encode(json.dumps(entry).encode()).decode()
    event["id"] = uuid.uuid4().hex
    return event


def test_trigger_submits_once_per_succeeded_tuning_job_and_never_for_a_failed_one(
        stack_env: Any, local_stack: Any, demo: dict[str, str], prefix: str, ledger: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import functions_framework
    from google.cloud import aiplatform

    from tune2serve.localstack.admin import record_tuning_job
    from tune2serve.pipelines import trigger

    bucket = f"gs://{local_stack.bucket}/{prefix}"
    monkeypatch.setenv("TUNE2SERVE_PIPELINE_ROOT", f"{bucket}/trigger-root")
    monkeypatch.setenv("TUNE2SERVE_TEMPLATE", str(TEMPLATE))
    monkeypatch.setenv("TUNE2SERVE_PIPELINE_PARAMS", json.dumps({"base_model": demo["base"]}))
    monkeypatch.setenv("TUNE2SERVE_EXPORT_PREFIX", f"{bucket}/trigger-exports")
    monkeypatch.setenv("TUNE2SERVE_REGION", local_stack.region)
    monkeypatch.setenv("TUNE2SERVE_PROJECT", local_stack.project)
    client = functions_framework.create_app(target="on_tuning_job_event", source=str(REPO / "pipelines" / "trigger.py"),
                                            signature_type="cloudevent").test_client()

    def deliver(event: dict[str, Any]) -> int:
        return client.post("/", data=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"}).status_code

    tuning_id = str(uuid.uuid4().int)[:19]
    tuning_job = f"projects/{local_stack.project}/locations/{local_stack.region}/tuningJobs/{tuning_id}"
    name = f"projects/{local_stack.project}/locations/{local_stack.region}/pipelineJobs/{trigger.pipeline_job_id(tuning_job)}"
    ledger["jobs"].add(name)
    # the trigger reads the job's state and output from Vertex, never from the event
    record_tuning_job(local_stack.api_endpoint, tuning_job, "JOB_STATE_SUCCEEDED", demo["tuning_output"])
    succeeded = _event("pubsub_tuning_succeeded.json", tuning_id, local_stack.project, local_stack.region,
                       demo["tuning_output"])
    before = pipeline_jobs(local_stack)

    assert deliver(succeeded) == 200
    after = pipeline_jobs(local_stack)
    assert set(after) - set(before) == {name}
    job = aiplatform.PipelineJob.get(name)
    # one promotion per module: this run is stopped before it can deploy
    job.cancel()
    assert wait_done(local_stack, name, timeout_s=120).state == CANCELLED
    params = job.gca_resource.runtime_config.parameter_values
    assert (params["source"], params["export_dest"], params["base_model"]) == (
        demo["tuning_output"], f"{bucket}/trigger-exports/{tuning_id}", demo["base"])
    assert dict(job.labels) == {"tune2serve-trigger": "tuning-job", "managed-by": "tune2serve"}

    assert deliver(succeeded) == 200  # the same event again: acknowledged, nothing submitted
    assert set(pipeline_jobs(local_stack)) == set(after)

    failed_id = str(uuid.uuid4().int)[:19]
    record_tuning_job(local_stack.api_endpoint, tuning_job.replace(tuning_id, failed_id), "JOB_STATE_FAILED")
    assert deliver(_event("pubsub_tuning_failed.json", failed_id, local_stack.project, local_stack.region, None)) == 200
    assert set(pipeline_jobs(local_stack)) == set(after)


def test_a_schedule_is_managed_and_fired_on_the_stack_and_a_run_with_nothing_to_do_is_a_no_op(
        stack_env: Any, local_stack: Any, prefix: str, ledger: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from google.cloud import aiplatform

    from tune2serve.localstack.admin import tick_schedules

    bucket = f"gs://{local_stack.bucket}/{prefix}"
    training = tmp_path / "run-0" / "checkpoint-5"  # a tuning run still training: nothing completed
    training.mkdir(parents=True)
    (training / "adapter_config.json").write_text("{}")
    local_stack.upload(training.parent, f"{prefix}/sched/tuning/run-0")
    target = ["--project", local_stack.project, "--region", local_stack.region, "--json"]
    display = f"nightly-{prefix}"

    assert main(["schedule", "create", *target, "--pipeline-root", f"{bucket}/sched-root", "--template", str(TEMPLATE),
                 "--display-name", display, "--cron", "0 3 * * *", "--source-prefix", f"{bucket}/sched/tuning",
                 "--param", f"export_dest={bucket}/sched/exports"]) == 0
    name = json.loads(capsys.readouterr().out)["name"]
    ledger["schedules"].add(name)
    assert main(["schedule", "list", *target]) == 0
    [listed] = [s for s in json.loads(capsys.readouterr().out)["schedules"] if s["name"] == name]
    assert (listed["state"], listed["cron"], listed["display_name"]) == ("ACTIVE", "0 3 * * *", display)

    def runs_of_schedule(started: list[str]) -> list[str]:
        return [j for j in started if aiplatform.PipelineJob.get(j).gca_resource.schedule_name == name]

    assert main(["schedule", "pause", name.rsplit("/", 1)[-1], *target]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "PAUSED"
    assert main(["local", "tick", "--home", str(local_stack.home), "--force", "--json"]) == 0
    paused_tick = json.loads(capsys.readouterr().out)["started"]
    ledger["jobs"].update(paused_tick)
    assert runs_of_schedule(paused_tick) == []  # a paused schedule starts nothing
    assert main(["schedule", "resume", name, *target]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "ACTIVE"
    assert runs_of_schedule(tick_schedules(local_stack.api_endpoint)) == []  # resumed, but not due until 03:00
    before = deployed(local_stack)

    started = tick_schedules(local_stack.api_endpoint, force=True)
    ledger["jobs"].update(started)
    [run] = runs_of_schedule(started)

    assert wait_done(local_stack, run, timeout_s=300).state == SUCCEEDED
    log = (local_stack.home / "pipelines" / "pipeline_runs" / run.rsplit("/", 1)[-1] / "log.txt").read_text()
    assert f"nothing to do: no completed tuning output under {bucket}/sched/tuning" in log
    assert deployed(local_stack) == before  # discover → skip: nothing exported, nothing deployed
    assert aiplatform.PipelineJobSchedule.get(name).gca_resource.started_run_count == 1

    assert main(["schedule", "delete", name, *target]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": name, "state": "DELETED"}
    assert main(["schedule", "list", *target]) == 0
    assert name not in {s["name"] for s in json.loads(capsys.readouterr().out)["schedules"]}


def test_the_tick_route_refuses_a_malformed_request(local_stack: Any) -> None:
    import httpx

    response = httpx.post(f"{local_stack.api_endpoint}/_local/schedules:tick", json={"force": "yes"}, timeout=30)
    assert response.status_code == 400
    assert "expected {\"force\": bool}" in response.json()["error"]["message"]
