"""The SDK set-up `tune2serve local run` installs (localstack/sdk_setup.py as a
sitecustomize.py first on PYTHONPATH), in real Python processes with the real SDK: the
Vertex SDK, Vertex's GAPIC clients built for the real host and Resource Manager's
client are pointed at the stack's endpoint before the
user's code runs, nothing changes without the variable, and a distribution's own
sitecustomize still runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tune2serve.localstack import projects, sdk_setup

ENDPOINT = "http://127.0.0.1:9"  # nothing listens: no request is made by the set-up itself
PROBE = """
import json, sys
import vertexai
from google.cloud.aiplatform import initializer
vertexai.init(project="my-project", location="europe-west4")  # the user's own init keeps the set-up
from google.cloud import resourcemanager
client = resourcemanager.ProjectsClient()
from google.auth.credentials import AnonymousCredentials
own = resourcemanager.ProjectsClient(client_options={"api_endpoint": "elsewhere.example:443"},
                                     credentials=AnonymousCredentials())
from google.cloud import aiplatform_v1
gapic = aiplatform_v1.PredictionServiceClient(client_options={"api_endpoint": "us-central1-aiplatform.googleapis.com"})
elsewhere = aiplatform_v1.PredictionServiceClient(client_options={"api_endpoint": "example.com:443"},
                                                  credentials=AnonymousCredentials())
config = initializer.global_config
print(json.dumps({"gapic": [gapic.transport.kind, gapic.api_endpoint], "gapic_elsewhere": elsewhere.api_endpoint,
                  "endpoint": config.api_endpoint, "transport": config._api_transport,
                  "credentials": type(config.credentials).__name__, "project": config.project,
                  "projects_client": [client.transport.kind, client.api_endpoint],
                  "own_client": own.api_endpoint,
                  "tune2serve_imported": any(m.startswith("tune2serve") for m in sys.modules)}))
"""


def _run(tmp_path: Path, env: dict[str, str], extra_path: list[str] = ()) -> dict:
    boot = tmp_path / "sdk"
    boot.mkdir(exist_ok=True)
    shutil.copy(sdk_setup.__file__, boot / "sitecustomize.py")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "TUNE2SERVE_"))}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**base, "PYTHONPATH": os.pathsep.join([str(boot), *extra_path]), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_sdk_is_pointed_at_the_stack_before_the_users_code(tmp_path: Path) -> None:
    seen = _run(tmp_path, {"TUNE2SERVE_VERTEX_API_ENDPOINT": ENDPOINT})
    assert seen == {"gapic": ["rest", ENDPOINT], "gapic_elsewhere": "example.com:443",
                    "endpoint": ENDPOINT, "transport": "rest", "credentials": "AnonymousCredentials",
                    "project": "my-project", "projects_client": ["rest", ENDPOINT],
                    "own_client": "elsewhere.example:443", "tune2serve_imported": False}


def test_without_a_stack_nothing_changes(tmp_path: Path) -> None:
    adc = tmp_path / "adc.json"  # some credentials, so that the SDK's own defaults can be read offline
    adc.write_text(json.dumps(projects.credentials_file("http://127.0.0.1:9")))
    seen = _run(tmp_path, {"GOOGLE_APPLICATION_CREDENTIALS": str(adc)})
    assert (seen["endpoint"], seen["transport"], seen["credentials"]) == (None, None, "Credentials")
    assert seen["projects_client"] == ["grpc", "cloudresourcemanager.googleapis.com"]
    assert seen["gapic"] == ["grpc", "us-central1-aiplatform.googleapis.com"]


def test_a_distributions_own_sitecustomize_still_runs(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import os\nos.environ['TUNE2SERVE_CHAINED'] = 'yes'\n")
    probe = tmp_path / "sdk"
    probe.mkdir()
    shutil.copy(sdk_setup.__file__, probe / "sitecustomize.py")
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('TUNE2SERVE_CHAINED'))"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": f"{probe}{os.pathsep}{theirs}"})
    assert proc.stdout.strip() == "yes", proc.stderr


@pytest.mark.parametrize("already", [False, True])
def test_the_hook_runs_once_the_module_has_been_executed(already: bool, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"t2s_sdk_setup_probe_{int(already)}"
    (tmp_path / f"{name}.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[tuple[str, int, str]] = []
    monkeypatch.setattr(sdk_setup, "AIPLATFORM", name)
    monkeypatch.setattr(sdk_setup, "PROJECTS_CLIENT", f"{name}_never_imported")  # this process's client untouched
    monkeypatch.setattr(sdk_setup, "point_aiplatform", lambda m, e: seen.append((m.__name__, m.VALUE, e)))
    if already:
        __import__(name)
    finder = sdk_setup.install({"TUNE2SERVE_VERTEX_API_ENDPOINT": ENDPOINT})
    try:
        assert seen == ([(name, 42, ENDPOINT)] if already else [])  # imported before: set up at once
        module = __import__(name)
        assert module.VALUE == 42
        assert seen == [(name, 42, ENDPOINT)]  # once, after the module's own code ran
        assert sdk_setup.install({}) is None  # no stack named: nothing installed
    finally:
        sys.meta_path.remove(finder)  # type: ignore[arg-type]
        sys.modules.pop(name, None)
