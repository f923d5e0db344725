"""The local Vertex server's tuning jobs: recorded by the admin call, read back through
the SDK's GenAiTuningServiceClient as the trigger and export read them (v1beta1 and v1),
404 for a job never recorded, 400 for a record that is not a TuningJob."""

from __future__ import annotations

import uuid

import pytest

from tests.stack_fixtures import StackHandle

pytestmark = [pytest.mark.stack]


def _client(stack: StackHandle, version: str):
    from google.auth.credentials import AnonymousCredentials

    module = __import__(f"google.cloud.aiplatform_{version}", fromlist=["GenAiTuningServiceClient"])
    return module.GenAiTuningServiceClient(credentials=AnonymousCredentials(), transport="rest",
                                           client_options={"api_endpoint": stack.api_endpoint})


def _name(stack: StackHandle) -> str:
    return f"projects/{stack.project}/locations/{stack.region}/tuningJobs/{uuid.uuid4().int % 10**18}"


def test_a_recorded_tuning_job_is_read_back_through_the_sdk(stack_env: StackHandle) -> None:
    from tune2serve.localstack.admin import record_tuning_job

    name = _name(stack_env)
    stored = record_tuning_job(stack_env.api_endpoint, name, "JOB_STATE_SUCCEEDED", "gs://bucket/tuning/run-1")
    assert {k: stored[k] for k in ("name", "state", "outputUri")} == {
        "name": name, "state": "JOB_STATE_SUCCEEDED", "outputUri": "gs://bucket/tuning/run-1"}
    job = _client(stack_env, "v1beta1").get_tuning_job(name=name)
    assert (job.name, job.state.name, job.output_uri) == (name, "JOB_STATE_SUCCEEDED", "gs://bucket/tuning/run-1")
    assert _client(stack_env, "v1").get_tuning_job(name=name).state.name == "JOB_STATE_SUCCEEDED"  # v1 has no output_uri
    record_tuning_job(stack_env.api_endpoint, name, "JOB_STATE_FAILED")  # a second record replaces the first
    assert _client(stack_env, "v1beta1").get_tuning_job(name=name).state.name == "JOB_STATE_FAILED"


def test_an_unknown_tuning_job_is_404(stack_env: StackHandle) -> None:
    from google.api_core import exceptions as gexc

    with pytest.raises(gexc.NotFound):
        _client(stack_env, "v1beta1").get_tuning_job(name=_name(stack_env))


@pytest.mark.parametrize("body", [
    {"name": "projects/p/locations/l/tuningJobs/1", "state": "JOB_STATE_SUCCEEDED", "outputUrl": "gs://b/o"},
    {"name": "projects/p/locations/l/endpoints/1", "state": "JOB_STATE_SUCCEEDED"},
    {"name": "projects/p/locations/l/tuningJobs/1", "state": "NOT_A_STATE"},
])
def test_a_record_that_is_not_a_tuning_job_is_400(stack_env: StackHandle, body: dict) -> None:
    from tune2serve.localstack.admin import _post

    with pytest.raises(RuntimeError, match="HTTP 400"):
        _post(stack_env.api_endpoint, "/_local/tuningJobs", body, "tuning job record", 30.0)
