"""Shared fixtures: an isolated environment, a real fake-gcs-server, tiny real models.

No test mocks google-cloud-storage or the Vertex SDK: GCS tests go through the real
client to a real fake-gcs-server started here.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Local-stack fixtures (a running `tune2serve local up`) live in their own module.
pytest_plugins = ["tests.stack_fixtures"]

from tune2serve.localstack import gcs as local_gcs
from tune2serve.localstack.ports import free_port

_CLEARED_PREFIXES = ("GOOGLE_", "VERTEX_", "TUNE2SERVE_", "CLOUDSDK_", "HF_TOKEN")
# The local stacks the tests start route repeatably (``localstack/dataplane.py``): each
# canary step's binomial test is wrongly failed by chance at its significance (1 %) on
# random routing, so with many promotions in a run some run would fail on routing luck.
ROUTING_SEED = ("TUNE2SERVE_LOCAL_ROUTING_SEED", "20261207")
os.environ.setdefault(*ROUTING_SEED)  # for the stacks session and module fixtures start


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts with no cloud configuration and offline model hubs, so nothing
    reaches the real Vertex AI or GCS by accident."""
    for name in list(os.environ):
        if name.startswith(_CLEARED_PREFIXES) or name == "STORAGE_EMULATOR_HOST":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("TUNE2SERVE_LOG_FORMAT", "json")
    monkeypatch.setenv(*ROUTING_SEED)  # for the stacks a test starts itself


@pytest.fixture(scope="session")
def fake_gcs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real fake-gcs-server on a loopback port for the whole session."""
    root = tmp_path_factory.mktemp("fake-gcs")
    port = free_port()
    proc = subprocess.Popen(local_gcs.command(root, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        local_gcs.wait_ready(url, process=proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def gcs_bucket(fake_gcs_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the session's fake-gcs-server; STORAGE_EMULATOR_HOST points at it."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_url)
    from tune2serve.components.checkpoint.storage import storage_client

    name = f"test-{uuid.uuid4().hex[:12]}"
    storage_client().create_bucket(name)
    return name


def upload_folder(local: Path, bucket: str, prefix: str) -> str:
    """Uploads a local folder with the real storage client; returns its gs:// URI."""
    from tune2serve.components.checkpoint.storage import storage_client

    b = storage_client().bucket(bucket)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            b.blob(f"{prefix}/{path.relative_to(local).as_posix()}").upload_from_filename(str(path))
    return f"gs://{bucket}/{prefix}"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-file safetensors Llama-architecture model with tokenizer and chat template."""
    from tune2serve.demo.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_qwen_sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sharded (index + 5 shards) Qwen2-architecture model with tied embeddings."""
    from tune2serve.demo.tiny_models import TinySpec, make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-qwen-sharded",
        TinySpec(architecture="qwen2", tie_word_embeddings=True),
        max_shard_size="350KB",
    )


@pytest.fixture(scope="session")
def tiny_llama_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `.bin` (pickled state dict) Llama-architecture model."""
    from tune2serve.demo.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama-bin", weights="bin")

