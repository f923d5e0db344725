"""Fixtures for the Vertex Pipelines tests: a loopback server with the local
pipelineJobs/schedules service, fake-gcs-server, and tiny pipelines compiled on the spot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud import server as pipelines_server


@pytest.fixture
def pipelines(tmp_path: Path, gcs_bucket: str, fake_gcs_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[pipelines_server.PipelinesServer]:
    """The local Pipelines API on 127.0.0.1; the environment points the SDK at it."""
    child_env = {"STORAGE_EMULATOR_HOST": fake_gcs_url, "TUNE2SERVE_LOG_FORMAT": "json"}
    srv = pipelines_server.start(tmp_path / "vertex-state", child_env)
    child_env["TUNE2SERVE_VERTEX_API_ENDPOINT"] = srv.url
    srv.service.env.update(child_env)
    monkeypatch.setenv("TUNE2SERVE_VERTEX_API_ENDPOINT", srv.url)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-parameter pipeline compiled to YAML (source required, n defaulted)."""
    from tests.cloud.tiny_pipelines import compile_echo

    return compile_echo(tmp_path_factory.mktemp("templates") / "echo.yaml")


@pytest.fixture(scope="session")
def scheduled_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.cloud.tiny_pipelines import compile_scheduled

    return compile_scheduled(tmp_path_factory.mktemp("templates") / "scheduled.yaml")
