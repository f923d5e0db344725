"""``tune2serve local run -- CMD`` / ``local shell``: run a command with every Google
client already pointed at the local stack, so Google's own sample code runs unchanged.

The environment is what ``local env`` prints (``STORAGE_EMULATOR_HOST``,
``TUNE2SERVE_VERTEX_API_ENDPOINT``, ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``,
``CURL_CA_BUNDLE``, ...) plus:

- ``PYTHONPATH`` starting with ``HOME/sdk``, which holds ``sitecustomize.py`` (a copy of
  ``localstack/sdk_setup.py``): Python runs it at start-up, and it points the Vertex SDK
  and Resource Manager's client at the stack when they are imported;
- ``GOOGLE_APPLICATION_CREDENTIALS``: ``HOME/sdk/credentials.json``, credentials whose
  token URI is the local server (``google.auth.default()`` works offline);
- ``GOOGLE_CLOUD_PROJECT`` and ``GOOGLE_CLOUD_REGION`` (the SDK's defaults when the code
  names none): the stack's project and region, unless already set;
- ``CLOUDSDK_*``: ``gcloud ai …`` commands talk to the stack with a local token and a
  configuration folder of their own (``_gcloud``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tune2serve.localstack import projects, sdk_setup
from tune2serve.localstack.stack import LocalStack


def _write_if_changed(path: Path, text: str) -> None:
    """Writes ``text`` atomically unless the file already holds it (concurrent runs)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sdk_environment(stack: LocalStack, base: dict[str, str]) -> dict[str, str]:
    """``base`` (the caller's environment) with the local stack's SDK set-up on top."""
    folder = stack.home / "sdk"
    _write_if_changed(folder / "sitecustomize.py", Path(sdk_setup.__file__).read_text(encoding="utf-8"))
    credentials = folder / "credentials.json"
    _write_if_changed(credentials, json.dumps(projects.credentials_file(stack.api_endpoint), indent=1) + "\n")
    config = stack.config
    env = {**base, **stack.env()}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *[p for p in [base.get("PYTHONPATH", "")] if p]])
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(credentials)
    env.setdefault("GOOGLE_CLOUD_PROJECT", config.project)
    env.setdefault("GOOGLE_CLOUD_REGION", config.region)
    env.update(_gcloud(folder, stack.api_endpoint))
    env.setdefault("CLOUDSDK_CORE_PROJECT", env["GOOGLE_CLOUD_PROJECT"])
    env.setdefault("CLOUDSDK_AI_REGION", env["GOOGLE_CLOUD_REGION"])
    return env


def _gcloud(folder: Path, api_endpoint: str) -> dict[str, str]:
    """gcloud's own properties, as environment variables, for ``gcloud ai`` commands: the
    Vertex API at the stack, a fixed token (``gcloud auth print-access-token`` prints it),
    a configuration folder of its own (the user's accounts stay out) and no update check
    or usage report (no request leaves the machine)."""
    token = folder / "access-token"
    _write_if_changed(token, projects.LOCAL_TOKEN + "\n")
    return {"CLOUDSDK_API_ENDPOINT_OVERRIDES_AIPLATFORM": f"{api_endpoint}/",
            "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token), "CLOUDSDK_CONFIG": str(folder / "gcloud"),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1"}


def run_command(command: list[str], env: dict[str, str]) -> int:
    """Runs ``command`` in ``env`` in the foreground; its exit status."""
    from tune2serve.components.errors import UsageError

    try:
        return subprocess.run(command, env=env, check=False).returncode
    except FileNotFoundError as e:
        raise UsageError(f"tune2serve local run: command not found: {command[0]!r}") from e
    except PermissionError as e:
        raise UsageError(f"tune2serve local run: cannot execute {command[0]!r}: {e.strerror}") from e
