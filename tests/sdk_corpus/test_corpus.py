"""Calls written from the documented request shapes (tests/sdk_corpus/*: deploy with the
Python SDK and with REST/curl — public and PSC —, the four query forms,
list_deploy_options, PipelineJob.submit with the compiled template, clean-up) run
against the local stack through the one documented set-up, `tune2serve local run -- CMD`,
from an environment that names no local stack: whatever they reach, that command pointed
them at. Each script prints one JSON line per call; every call must do what the docs say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack_fixtures import StackHandle

pytestmark = pytest.mark.stack

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TUNE2SERVE = str(Path(sys.executable).with_name("tune2serve"))


@pytest.fixture(scope="module")
def model_gcs(local_stack: StackHandle, tiny_llama: Path) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", local_stack.env["STORAGE_EMULATOR_HOST"])
        return local_stack.upload(tiny_llama, "corpus/tiny-llama")


def run_through_local_run(stack: StackHandle, command: list[str], **extra: str) -> tuple[int, list[dict], str]:
    """``tune2serve local run --home HOME -- COMMAND`` from a bare environment; the
    exit status, the JSON lines printed, and stderr."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8", **extra}
    proc = subprocess.run([TUNE2SERVE, "local", "run", "--home", str(stack.home), "--", *command],
                          env=env, capture_output=True, text=True, timeout=900, cwd=HERE)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, records, proc.stderr


def _calls(records: list[dict]) -> dict[str, bool]:
    return {r["call"]: r["ok"] for r in records}


def test_the_python_sdk_forms_run_unchanged(local_stack: StackHandle, model_gcs: str) -> None:
    code, records, err = run_through_local_run(local_stack, [sys.executable, "deploy_python_sdk.py"],
                                               MODEL_GCS=model_gcs)
    assert _calls(records) == {
        "list_deploy_options": True, "CustomModel.deploy": True, "predict": True, "chat.completions": True,
        "Endpoint.raw_predict": True, "streamRawPredict": True,
        "Endpoint.predict(use_dedicated_endpoint=True)": True,
        "Endpoint.predict() (routed to the dedicated DNS by the SDK)": True,
        "PredictionServiceClient.predict at the regional host is refused": True, "undeploy_all + delete": True,
    }, (records, err[-3000:])
    assert code == 0


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
def test_the_rest_and_curl_forms_run_as_the_docs_print_them(local_stack: StackHandle, model_gcs: str) -> None:
    code, records, err = run_through_local_run(local_stack, ["bash", "deploy_rest_curl.sh"], MODEL_GCS=model_gcs)
    assert _calls(records) == {
        ":deploy (trailing commas, as the docs print it)": True, "operation done": True,
        "GET endpoint (dedicatedEndpointDns, no default-valued fields)": True,
        "chat/completions (unary)": True, "chat/completions (stream)": True, ":predict (instances)": True,
        ":streamRawPredict": True, ":predict at the regional host is refused": True,
        "undeployModel + DELETE endpoint + DELETE model": True,
        "PSC endpoint: privateEndpoints.serviceAttachment, no dedicatedEndpointDns": True,
    }, (records, err[-3000:])
    assert code == 0


def test_pipeline_job_submit_returns_fast_and_types_are_checked_at_create(local_stack: StackHandle,
                                                                          model_gcs: str) -> None:
    code, records, err = run_through_local_run(
        local_stack, [sys.executable, "pipeline_submit.py"], MODEL_GCS=model_gcs, BUCKET=local_stack.bucket,
        TEMPLATE=str(REPO / "compiled" / "promote_checkpoint.yaml"))
    assert _calls(records) == {"PipelineJob.submit": True, "PipelineJob.cancel": True,
                               "a string for an integer parameter is refused at create": True}, (records, err[-3000:])
    assert code == 0
    assert "Error when trying to get or create a GCS bucket" not in err  # the ownership check passed, on this machine


def test_local_run_passes_the_exit_status_and_needs_a_running_stack(local_stack: StackHandle, tmp_path: Path) -> None:
    code, _, _ = run_through_local_run(local_stack, [sys.executable, "-c", "raise SystemExit(7)"])
    assert code == 7
    probe = ("import os, json, vertexai; from google.cloud.aiplatform import initializer as i; "
             "print(json.dumps({'endpoint': i.global_config.api_endpoint, 'curl': os.environ['CURL_CA_BUNDLE']}))")
    code, [seen], _ = run_through_local_run(local_stack, [sys.executable, "-c", probe])
    assert seen == {"endpoint": local_stack.api_endpoint, "curl": local_stack.env["REQUESTS_CA_BUNDLE"]}
    proc = subprocess.run([TUNE2SERVE, "local", "run", "--home", str(tmp_path / "none"), "--", "true"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(f"run `tune2serve local up --home {tmp_path / 'none'}` first")
    assert "Traceback" not in proc.stderr
