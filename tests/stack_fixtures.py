"""Local-stack fixtures: a real `tune2serve local up` stack for the test session.

- ``local_stack`` (session): a stack in a temporary home, serving with the quick engine
  (``transformers serve``: these tests need an OpenAI-shaped server, not vLLM's behaviour;
  tests/README.md says which tests run on vLLM); yields a ``StackHandle`` with
  ``.env`` (the variables `local env` prints), ``.api_endpoint``, ``.home``,
  ``.project``, ``.region``, ``.bucket``. Every process it started (model servers
  included) is stopped at the end of the session, on failure too.
- ``stack_env`` (function): applies ``local_stack.env`` with monkeypatch and returns the
  handle.
- ``vertex_local`` (function): ``stack_env`` plus ``vertexai.init`` pointed at the stack
  (REST, anonymous credentials); returns the handle.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class StackHandle:
    home: Path
    env: dict[str, str]
    api_endpoint: str
    project: str
    region: str
    bucket: str

    def upload(self, local: Path, prefix: str) -> str:
        """Uploads a local folder to the stack's bucket with the real storage client."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        os.environ.setdefault("STORAGE_EMULATOR_HOST", self.env["STORAGE_EMULATOR_HOST"])
        client = storage.Client(project=self.project, credentials=AnonymousCredentials())
        b = client.bucket(self.bucket)
        for path in sorted(local.rglob("*")):
            if path.is_file():
                b.blob(f"{prefix}/{path.relative_to(local).as_posix()}").upload_from_filename(str(path))
        return f"gs://{self.bucket}/{prefix}"

    def vertex_init(self) -> None:
        """Points the Vertex SDK at the stack: the incantation the components use."""
        import vertexai
        from google.auth.credentials import AnonymousCredentials

        vertexai.init(project=self.project, location=self.region, api_endpoint=self.api_endpoint,
                      api_transport="rest", credentials=AnonymousCredentials())


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    from tune2serve.localstack.stack import LocalStack

    stack = LocalStack(tmp_path_factory.mktemp("stack-home"))
    atexit.register(stack.down)  # also on an interrupted session
    try:
        stack.up(engine="transformers")
        config = stack.config
        yield StackHandle(stack.home, stack.env(), stack.api_endpoint, config.project, config.region,
                          config.bucket)
    finally:
        stack.down()
        atexit.unregister(stack.down)


@pytest.fixture
def stack_env(local_stack: StackHandle, clean_environ: None, monkeypatch: pytest.MonkeyPatch) -> StackHandle:
    for name, value in local_stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TUNE2SERVE_PROJECT", local_stack.project)
    return local_stack


@pytest.fixture
def vertex_local(stack_env: StackHandle) -> StackHandle:
    stack_env.vertex_init()
    return stack_env
