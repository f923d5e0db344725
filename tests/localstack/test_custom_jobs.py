"""The local customJobs API: Vertex's create / get / list / cancel and job states, each
job's worker really run here as a local process — at the service, with generated
requests, and through the SDK's own JobServiceClient against a running local stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.localstack.custom_jobs import TERMINAL, CustomJobsService, worker_command

PARENT = "/v1/projects/p/locations/us-central1"


@pytest.fixture
def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    svc = CustomJobsService(tmp_path / "state", {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"})
    yield svc
    svc.close()


def body(command: list[str], args: list[str] | None = None, **container: Any) -> dict[str, Any]:
    return {"displayName": "worker", "labels": {"managed-by": "tune2serve"}, "jobSpec": {"workerPoolSpecs": [{
        "machineSpec": {"machineType": "n2-highmem-32"}, "replicaCount": "1",
        "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": 500},
        "containerSpec": {"imageUri": "us-docker.pkg.dev/p/r/image:1", "command": command, "args": args or [],
                          **container}}]}}


def _post(service: CustomJobsService, path: str, payload: Any) -> tuple[int, dict[str, Any]]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answer = service.handle("POST", PARENT + path, {}, raw)
    assert answer is not None
    return answer


WRITES_ITS_WORLD = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'exe': sys.executable, 'env': "
                    "{k: os.environ.get(k) for k in ('STORAGE_EMULATOR_HOST', 'GREETING', 'CLOUD_ML_JOB_ID')}}, "
                    "open('world.json', 'w'))")


def test_a_job_runs_its_worker_here_from_queued_to_succeeded(service: CustomJobsService) -> None:
    """Created QUEUED at once (no operation), then RUNNING, then SUCCEEDED: the worker
    pool's command and arguments ran with this Python, the container's env and the
    stack's, in the job's folder."""
    code, created = _post(service, "/customJobs", body(["python3", "-c", WRITES_ITS_WORLD], ["a b", "{\"x\": 1}"],
                                                       env=[{"name": "GREETING", "value": "hi"}]))
    assert code == 200 and created["state"] == "JOB_STATE_QUEUED", created
    name = created["name"]
    assert name.startswith("projects/p/locations/us-central1/customJobs/") and name.rsplit("/", 1)[1].isdigit()
    job = service.wait(name, timeout_s=60)
    assert job["state"] == "JOB_STATE_SUCCEEDED" and "error" not in job
    assert job["startTime"] <= job["endTime"]
    world = json.loads((service.job_dir(name) / "world.json").read_text())
    assert world["argv"] == ["a b", "{\"x\": 1}"] and world["exe"] == sys.executable
    assert world["env"] == {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9", "GREETING": "hi",
                            "CLOUD_ML_JOB_ID": name.rsplit("/", 1)[1]}
    code, got = service.handle("GET", f"/v1/{name}", {"$alt": "json;enum-encoding=int"}, b"") or (0, {})
    assert code == 200 and got["state"] == 4  # SUCCEEDED, as a number when the SDK asks for numbers
    assert got["jobSpec"]["workerPoolSpecs"][0]["diskSpec"]["bootDiskSizeGb"] == 500
    code, listed = service.handle("GET", PARENT + "/customJobs", {}, b"") or (0, {})
    assert [j["name"] for j in listed["customJobs"]] == [name]


def test_a_shell_script_finds_this_python_first(service: CustomJobsService) -> None:
    """A worker's ``sh -c`` script (KFP's lightweight-component shape) calls ``python3``:
    the one of this environment, with its packages."""
    script = 'python3 -c "import sys, tune2serve; open(\'which\', \'w\').write(sys.executable)"'
    name = _post(service, "/customJobs", body(["sh", "-ec", script]))[1]["name"]
    assert service.wait(name, timeout_s=60)["state"] == "JOB_STATE_SUCCEEDED"
    assert Path((service.job_dir(name) / "which").read_text()).parent == Path(sys.executable).parent
    assert worker_command(["python3.11", "-V"])[0] == sys.executable and worker_command(["sh", "-c", "x"])[0] == "sh"


def test_a_failing_worker_fails_the_job_saying_how_and_where_its_log_is(service: CustomJobsService) -> None:
    fails = "import sys; print('shards: 0 of 3'); sys.exit(3)"
    name = _post(service, "/customJobs", body(["python3", "-c", fails]))[1]["name"]
    job = service.wait(name, timeout_s=60)
    assert job["state"] == "JOB_STATE_FAILED"
    log = service.job_dir(name) / "log.txt"
    assert job["error"]["message"] == f"The replica workerpool0-0 exited with a non-zero status of 3. (log: {log})"
    assert "shards: 0 of 3" in log.read_text()


def test_cancel_stops_the_worker_and_ends_cancelled(service: CustomJobsService) -> None:
    name = _post(service, "/customJobs", body(["python3", "-c", "import time; time.sleep(60)"]))[1]["name"]
    rid = name.rsplit("/", 1)[1]
    with service._changed:  # the worker is running before it is cancelled
        assert service._changed.wait_for(lambda: service.get(name)["state"] == "JOB_STATE_RUNNING", timeout=30)
    assert service.handle("POST", f"{PARENT}/customJobs/{rid}:cancel", {}, b"") == (200, {})
    job = service.wait(name, timeout_s=30)
    assert job["state"] == "JOB_STATE_CANCELLED" and job["error"]["code"] == 1
    code, again = service.handle("POST", f"{PARENT}/customJobs/{rid}:cancel", {}, b"") or (0, {})
    assert (code, again["error"]["status"]) == (400, "FAILED_PRECONDITION")
    code, missing = service.handle("GET", f"{PARENT}/customJobs/1", {}, b"") or (0, {})
    assert (code, missing["error"]["status"]) == (404, "NOT_FOUND")


def test_a_restart_fails_what_was_in_flight(tmp_path: Path) -> None:
    """A server that restarts has lost the processes it ran: their jobs end FAILED, saying so."""
    name = "projects/p/locations/l/customJobs/1"
    running = {**body(["true"]), "name": name, "state": "JOB_STATE_RUNNING"}
    (tmp_path / "custom_jobs.json").write_text(json.dumps({name: running}))
    job = CustomJobsService(tmp_path, {}).get(name)
    assert job["state"] == "JOB_STATE_FAILED" and job["state"] in TERMINAL
    assert job["error"]["message"] == "The local Vertex server restarted while the job ran."


# Requests as they come: fields missing, mistyped, unknown, or a worker pool the local
# stack cannot run; the command is never one that does anything when it is accepted.
_POOL = st.fixed_dictionaries({}, optional={
    "machineSpec": st.sampled_from([{}, {"machineType": "n1-standard-4"}, {"machineType": 4}, None]),
    "replicaCount": st.sampled_from(["1", "2", 1, 0, "x", -1]),
    "containerSpec": st.fixed_dictionaries({}, optional={
        "imageUri": st.sampled_from(["", "img", 7]), "command": st.sampled_from([[], ["true"], "true", [1], None]),
        "args": st.sampled_from([[], ["--x"], "x", [None]]), "env": st.sampled_from([[], [{"name": "A"}], {"A": 1}])}),
    "pythonPackageSpec": st.just({"executorImageUri": "img", "packageUris": ["gs://b/p.tar.gz"],
                                  "pythonModule": "m"}),
    "colour": st.just("red"),
})
_BODY = st.one_of(
    st.fixed_dictionaries({}, optional={
        "displayName": st.sampled_from(["", "w", 3, None]),
        "jobSpec": st.fixed_dictionaries({}, optional={"workerPoolSpecs": st.lists(_POOL, max_size=3)}),
        "state": st.sampled_from(["JOB_STATE_SUCCEEDED", "nope"]), "labels": st.sampled_from([{}, {"a": "b"}, [1]]),
    }),
    st.binary(max_size=40), st.just(b"{,}"), st.just(b"[]"),
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_BODY)
def test_generated_requests_are_a_job_or_a_400_naming_the_field(service: CustomJobsService, payload: Any) -> None:
    """Any request is answered 200 with a job (and only one it can run: one pool, one
    replica, a container with a command) or 400 INVALID_ARGUMENT with a message — never a
    500, never a job made from a refused request."""
    before = set(service.jobs)
    code, answer = _post(service, "/customJobs", payload)
    if code == 200:
        pools = payload["jobSpec"]["workerPoolSpecs"]
        assert len(pools) == 1 and pools[0]["containerSpec"]["command"] and payload["displayName"]
        assert set(service.jobs) - before == {answer["name"]}
        service.wait(answer["name"], timeout_s=60)
    else:
        assert (code, answer["error"]["status"]) == (400, "INVALID_ARGUMENT") and answer["error"]["message"]
        assert set(service.jobs) == before


@pytest.mark.stack
def test_the_sdk_client_creates_and_follows_a_job_on_the_stack(stack_env: Any, tmp_path: Path) -> None:
    """The SDK's JobServiceClient (REST, the way components/vertex/clients.py points it)
    against the running local Vertex server: created, polled to SUCCEEDED, listed, and a
    job it cannot run refused as the SDK's BadRequest."""
    import time

    from google.api_core import exceptions
    from google.cloud.aiplatform_v1 import CustomJob, JobState

    from tune2serve.components.vertex.clients import job_service_client, target

    vertex = target(stack_env.project, stack_env.region)
    client = job_service_client(vertex)
    out = tmp_path / "ran"
    job = CustomJob.from_json(json.dumps(body(["python3", "-c", f"open({str(out)!r}, 'w').write('yes')"])))
    created = client.create_custom_job(parent=vertex.parent, custom_job=job)
    assert created.state == JobState.JOB_STATE_QUEUED and created.display_name == "worker"
    deadline = time.monotonic() + 60
    while (got := client.get_custom_job(name=created.name)).state not in (
            JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert got.state == JobState.JOB_STATE_SUCCEEDED, got.error
    assert out.read_text() == "yes"
    assert created.name in [j.name for j in client.list_custom_jobs(parent=vertex.parent)]
    with pytest.raises(exceptions.BadRequest, match="one replica of one worker pool"):
        two = body(["true"])
        two["jobSpec"]["workerPoolSpecs"][0]["replicaCount"] = "2"
        client.create_custom_job(parent=vertex.parent, custom_job=CustomJob.from_json(json.dumps(two)))
