"""Shared deployments for the local-stack tests: model servers take seconds to start,
so one tiny model is deployed once per session through the real SDK and reused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.stack_fixtures import StackHandle


@dataclass(frozen=True)
class Deployed:
    endpoint: str
    model: str
    deployed_model_id: str
    gcs_uri: str


@pytest.fixture(scope="session")
def tiny_uri(local_stack: StackHandle, tiny_llama: Path) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", local_stack.env["STORAGE_EMULATOR_HOST"])
        return local_stack.upload(tiny_llama, "models/tiny-llama")


@pytest.fixture(scope="session")
def deployed(local_stack: StackHandle, tiny_uri: str) -> Iterator[Deployed]:
    """An endpoint made by Model Garden's CustomModel.deploy, serving the tiny model."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in local_stack.env.items():
            mp.setenv(k, v)
        local_stack.vertex_init()
        from google.cloud import aiplatform
        from vertexai.preview import model_garden

        endpoint = model_garden.CustomModel(gcs_uri=tiny_uri).deploy(
            endpoint_display_name="tests-shared", model_display_name="tiny-llama",
            system_labels={"suite": "local"},
        )
        ep = aiplatform.Endpoint(endpoint.resource_name)
        dm = ep.gca_resource.deployed_models[0]
        yield Deployed(ep.resource_name, dm.model, dm.id, tiny_uri)
