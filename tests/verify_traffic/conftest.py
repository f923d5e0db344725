"""Deployments for the verify-traffic stack tests, made once per module through the
real SDK (Model Garden's CustomModel.deploy) from two tiny models with different seeds:
"old" serves the production endpoint, "new" sits on its own staging endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.stack_fixtures import StackHandle


@dataclass(frozen=True)
class Deployment:
    endpoint: str
    model: str
    deployed_model_id: str
    dns: str


def deploy_tiny(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory, name: str, seed: int) -> Deployment:
    from tune2serve.demo.tiny_models import make_tiny_model

    return deploy_folder(stack, make_tiny_model(tmp_path_factory.mktemp("vt-models") / name, seed=seed), name)


def deploy_folder(stack: StackHandle, folder: Path, name: str) -> Deployment:
    """Uploads ``folder`` to the stack's bucket and deploys it on an endpoint of its own."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in stack.env.items():
            mp.setenv(k, v)
        uri = stack.upload(folder, f"verify-traffic/{name}")
        from google.cloud import aiplatform
        from vertexai.preview import model_garden

        from tune2serve.components.vertex.clients import init_sdk, target

        init_sdk(target(stack.project, stack.region))
        endpoint = model_garden.CustomModel(gcs_uri=uri).deploy(endpoint_display_name=f"vt-{name}",
                                                                model_display_name=f"vt-{name}")
        ep = aiplatform.Endpoint(endpoint.resource_name)
        dm = ep.gca_resource.deployed_models[0]
        return Deployment(ep.resource_name, dm.model, dm.id, ep.gca_resource.dedicated_endpoint_dns)


@pytest.fixture(scope="module")
def production(local_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield deploy_tiny(local_stack, tmp_path_factory, "old", seed=1)


@pytest.fixture(scope="module")
def staging(local_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield deploy_tiny(local_stack, tmp_path_factory, "new", seed=2)
