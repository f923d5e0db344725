"""Deploying a plain Hugging Face folder (no manifest.json: not exported by tune2serve),
uploaded with the storage client, on the local stack through the real clients: it
deploys with one warning, identified by its object listing; a rerun makes nothing new;
rewriting one object makes a new Model; half-uploaded folders deploy nothing; and the
changed folder is smoke-tested and promoted onto the first one's serving endpoint.
The pipeline's export passes such a folder through instead of copying it.

Two deployments for the module (the folder, then the folder with one object rewritten),
plus the promotion's deployModel; the tests run in file order and share them."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.demo.deployments import MACHINE_FLAGS, stack_environ
from tests.stack_fixtures import StackHandle
from tune2serve.components.deploy.deploy import DeployResult, deploy_export
from tune2serve.components.deploy.request import DeploySpec, deployment_ids
from tune2serve.components.vertex.machine_spec import MachineSpec
from tune2serve.cli.main import main

pytestmark = [pytest.mark.stack, pytest.mark.slow]
L4 = MachineSpec("g2-standard-12", "NVIDIA_L4", 1)
PREFIX = "custom-weights/plain"


def _storage(stack: StackHandle) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=stack.project, credentials=AnonymousCredentials())


def _listing_digest(stack: StackHandle, prefix: str) -> str:
    """The documented identity of a folder without a manifest, computed here from the
    storage client's own listing: sha256 over sorted name, size, crc32c."""
    h = hashlib.sha256()
    blobs = sorted(_storage(stack).list_blobs(stack.bucket, prefix=prefix + "/"), key=lambda b: b.name)
    assert blobs and all(b.crc32c for b in blobs)
    for b in blobs:
        h.update(f"{b.name[len(prefix) + 1:]}\0{b.size}\0crc32c:{b.crc32c}\n".encode())
    return h.hexdigest()


def _counts(stack: StackHandle) -> tuple[set[str], set[str]]:
    from google.cloud import aiplatform

    stack.vertex_init()
    return ({e.resource_name for e in aiplatform.Endpoint.list()},
            {m.resource_name for m in aiplatform.Model.list()})


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    finally:  # the CLI binds its log handler to the captured stderr
        logging.getLogger("tune2serve").handlers.clear()
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sharded Hugging Face folder as save_pretrained writes it (three shards and
    an index, tokenizer with chat template), and no manifest.json."""
    from tune2serve.demo.tiny_models import make_tiny_model

    folder = make_tiny_model(tmp_path_factory.mktemp("custom") / "plain", seed=3, max_shard_size="600KB")
    assert not (folder / "manifest.json").exists()
    assert len(list(folder.glob("model-*.safetensors"))) == 3
    return folder


@pytest.fixture(scope="module")
def first(local_stack: StackHandle, hf_folder: Path) -> tuple[str, DeployResult, list[logging.LogRecord]]:
    """The folder uploaded with the storage client and deployed: (URI, result, deploy's
    log records)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.INFO)
    logger = logging.getLogger("tune2serve")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with stack_environ(local_stack):
            uri = local_stack.upload(hf_folder, PREFIX)
            result = deploy_export(DeploySpec(uri, local_stack.project, local_stack.region, L4, run_id="custom-1"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return uri, result, records


def test_a_plain_folder_deploys_with_one_warning_and_its_listing_as_identity(stack_env: StackHandle, first: Any) -> None:
    from google.cloud import aiplatform

    uri, result, records = first
    assert not result.reused and result.dedicated_endpoint_dns
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert [getattr(r, "event", None) for r in warnings] == ["deploy.no_manifest"]
    assert "no manifest.json (not a tune2serve export)" in warnings[0].getMessage()
    digest = _listing_digest(stack_env, PREFIX)
    parent = f"projects/{stack_env.project}/locations/{stack_env.region}"
    ids = deployment_ids(uri, digest)
    assert result.endpoint == ids.endpoint_name(parent) and result.model.split("@")[0] == ids.model_name(parent)
    stack_env.vertex_init()
    labels = dict(aiplatform.Endpoint(result.endpoint).gca_resource.labels)
    assert labels["tune2serve-manifest"] == digest[:32] and labels["tune2serve-run"] == "custom-1"


def test_a_second_deploy_of_the_unchanged_folder_makes_nothing_new(stack_env: StackHandle, first: Any,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    uri, result, _ = first
    before = _counts(stack_env)
    code, out, err = _cli(capsys, "deploy", uri, "--project", stack_env.project, "--region", stack_env.region,
                          *MACHINE_FLAGS, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["reused"], doc["endpoint"], doc["model"]) == (True, result.endpoint, result.model)
    assert _counts(stack_env) == before


@pytest.fixture(scope="module")
def changed(local_stack: StackHandle, first: Any) -> DeployResult:
    """The same folder with one object rewritten (generation_config.json), deployed."""
    uri = first[0]
    with stack_environ(local_stack):
        blob = _storage(local_stack).bucket(local_stack.bucket).blob(f"{PREFIX}/generation_config.json")
        config = json.loads(blob.download_as_bytes())
        blob.upload_from_string(json.dumps({**config, "max_new_tokens": 24}, indent=2))
        return deploy_export(DeploySpec(uri, local_stack.project, local_stack.region, L4, run_id="custom-2"))


def test_rewriting_one_object_makes_a_new_model_and_keeps_the_old(stack_env: StackHandle, first: Any,
                                                                  changed: DeployResult) -> None:
    _, old, _ = first
    assert not changed.reused
    assert changed.model.split("@")[0] != old.model.split("@")[0] and changed.endpoint != old.endpoint
    endpoints, models = _counts(stack_env)
    assert {old.endpoint, changed.endpoint} <= endpoints
    assert {old.model.split("@")[0], changed.model.split("@")[0]} <= {m.split("@")[0] for m in models}


def _break(folder: Path, kind: str) -> str:
    """What a half-finished upload leaves; returns the file validate must name."""
    if kind == "missing-shard":
        (folder / "model-00002-of-00003.safetensors").unlink()
        return "model-00002-of-00003.safetensors"
    if kind == "truncated-shard":
        path = folder / "model-00003-of-00003.safetensors"
        path.write_bytes(path.read_bytes()[:100_000])
        return "model-00003-of-00003.safetensors"
    index = folder / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    name = next(iter(doc["weight_map"]))
    doc["weight_map"][name] = "model-00004-of-00004.safetensors"
    index.write_text(json.dumps(doc))
    return "model-00004-of-00004.safetensors"


@pytest.mark.parametrize("kind,code", [("missing-shard", "index-missing-shard"),
                                       ("truncated-shard", "header-offsets-out-of-bounds"),
                                       ("index-names-absent-shard", "index-missing-shard")])
def test_a_half_uploaded_folder_deploys_nothing(stack_env: StackHandle, hf_folder: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str], kind: str, code: str) -> None:
    broken = tmp_path / kind
    shutil.copytree(hf_folder, broken)
    named = _break(broken, kind)
    uri = stack_env.upload(broken, f"custom-weights/{kind}")
    before = _counts(stack_env)
    exit_code, out, err = _cli(capsys, "deploy", uri, "--project", stack_env.project, "--region", stack_env.region,
                               *MACHINE_FLAGS, "--json")
    assert (exit_code, out) == (1, "")
    assert "validation failed" in err and f"[{code}]" in err and named in err and "nothing was deployed" in err
    assert "Traceback" not in err
    assert _counts(stack_env) == before


def _add_stray(folder: Path, case: str, marker: Path) -> str:
    """What a Trainer output or a careless upload leaves beside the weights; returns the
    file deploy must name first. Every pickle's payload would run ``touch MARKER``."""
    import pickle

    from tests.export.conftest import RunsShell, hostile_pickle

    if case == "trainer":  # what Trainer.save_state and _save_checkpoint write, optimizer.pt hostile
        hostile_pickle(folder / "optimizer.pt", marker, {"state": {}, "param_groups": [{"lr": 1e-4}]})
        for name in ("scheduler.pt", "rng_state.pth", "training_args.bin"):
            hostile_pickle(folder / name, marker)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": 5, "log_history": []}))
        return "optimizer.pt"
    if case == "trainer-state-only":
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
        return "trainer_state.json"
    if case == "nested-pickle":
        (folder / "original").mkdir()  # as Meta's published repositories hold it
        hostile_pickle(folder / "original" / "consolidated.00.pth", marker)
        return "original/consolidated.00.pth"
    (folder / "extra_weights.dat").write_bytes(pickle.dumps({"w": RunsShell(marker)}, protocol=4))  # disguised
    return "extra_weights.dat"


@pytest.mark.parametrize("case", ["trainer", "trainer-state-only", "nested-pickle", "disguised-pickle"])
def test_training_state_and_stray_pickles_are_refused_before_any_vertex_call(
        stack_env: StackHandle, hf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Exit 1 naming the file and the way out (export makes a clean folder), nothing
    made, no pickle opened. Vertex is pointed at a closed port, so the refusal cannot
    come from (or after) any Vertex call."""
    from tune2serve.localstack.ports import free_port

    folder = tmp_path / case
    shutil.copytree(hf_folder, folder)
    marker = tmp_path / "MARKER"
    named = _add_stray(folder, case, marker)
    uri = stack_env.upload(folder, f"custom-weights/stray-{case}")
    before = _counts(stack_env)
    monkeypatch.setenv("TUNE2SERVE_VERTEX_API_ENDPOINT", f"127.0.0.1:{free_port()}")
    exit_code, out, err = _cli(capsys, "deploy", uri, "--project", stack_env.project, "--region", stack_env.region,
                               *MACHINE_FLAGS, "--json")
    assert (exit_code, out) == (1, ""), err
    assert f"{uri}: refusing to deploy" in err and named in err and "tune2serve export" in err
    assert "Nothing was deployed" in err and "Traceback" not in err
    assert not marker.exists()
    assert _counts(stack_env) == before


SECRET_CASES = {  # (file, patch, JSON path deploy must name); no value is ever printed
    "url-userinfo": ("config.json", {"_name_or_path": "https://hf_" + "Ab3" * 12 + "@huggingface.co/org/model"},
                     "$._name_or_path"),
    "nested-bearer": ("config.json", {"hub": {"headers": {"Authorization": "Bearer " + "x9Y" * 10}}},
                      "$.hub.headers.Authorization"),
    "token-key": ("tokenizer_config.json", {"token": "hf_" + "Zq7" * 12}, "$.token"),
    "google-key": ("generation_config.json", {"extra": ["ok", {"api": "AIza" + "B1c" * 11 + "de"}]}, "$.extra[1].api"),
}


@pytest.mark.parametrize("case", sorted(SECRET_CASES))
def test_a_folder_whose_settings_carry_credentials_is_refused_before_any_vertex_call(
        stack_env: StackHandle, hf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """The credential would reach every replica: exit 1 naming the file and JSON path, never
    the value; Vertex at a closed port, so the refusal comes before any Vertex call."""
    from tune2serve.localstack.ports import free_port

    name, patch, path = SECRET_CASES[case]
    folder = tmp_path / case
    shutil.copytree(hf_folder, folder)
    doc = json.loads((folder / name).read_text())
    doc.update(patch)
    (folder / name).write_text(json.dumps(doc))
    uri = stack_env.upload(folder, f"custom-weights/secret-{case}")
    before = _counts(stack_env)
    monkeypatch.setenv("TUNE2SERVE_VERTEX_API_ENDPOINT", f"127.0.0.1:{free_port()}")
    exit_code, out, err = _cli(capsys, "deploy", uri, "--project", stack_env.project, "--region", stack_env.region,
                               *MACHINE_FLAGS, "--json")
    assert (exit_code, out) == (1, ""), err
    assert f"refusing to deploy a folder whose settings carry credentials: {name}: {path}" in err
    assert "tune2serve export" in err and "Traceback" not in err
    assert "Ab3Ab3" not in err and "x9Yx9Y" not in err and "Zq7Zq7" not in err and "B1cB1c" not in err
    assert _counts(stack_env) == before


def test_the_changed_folder_is_smoke_tested_and_promoted_onto_the_serving_endpoint(
        stack_env: StackHandle, first: Any, changed: DeployResult, capsys: pytest.CaptureFixture[str]) -> None:
    _, production, _ = first
    code, out, err = _cli(capsys, "smoke-test", changed.endpoint, "--project", stack_env.project, "--region",
                          stack_env.region, "--json")
    assert code == 0, err
    code, out, err = _cli(capsys, "verify-traffic", production.endpoint, "--project", stack_env.project, "--region",
                          stack_env.region, "--model", changed.model, "--staging-endpoint", changed.endpoint,
                          "--canary-percent", "50", "--json")
    doc = json.loads(out)
    assert (code, doc["outcome"]) == (0, "promoted"), err
    [(serving, share)] = doc["traffic_split"].items()
    from google.cloud import aiplatform

    stack_env.vertex_init()
    deployed = {d.id: d.model for d in aiplatform.Endpoint(production.endpoint).gca_resource.deployed_models}
    assert share == 100 and deployed[serving].split("@")[0] == changed.model.split("@")[0]


def test_the_pipeline_export_passes_a_deployable_folder_through(stack_env: StackHandle, hf_folder: Path,
                                                               tmp_path: Path) -> None:
    from kfp.dsl import Model

    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.export.component import export

    uri = stack_env.upload(hf_folder, "custom-weights/pass-through")
    dest = f"gs://{stack_env.bucket}/exports/pass-through"
    model = Model(name="model", uri=str(tmp_path / "model"), metadata={})
    out = export.python_func(source=uri + "/", dest=dest, model=model)
    assert out.export_uri == uri and model.uri == uri
    assert model.metadata["passthrough"] is True and model.metadata["manifest_digest"] == _listing_digest(
        stack_env, "custom-weights/pass-through")
    assert "already a deployable folder" in model.metadata["notes"][0]
    # The fanned-out export (plan, workers, commit) passes it through the same way.
    from tune2serve.components.export.fanout.fanout import Group, commit_export, export_group, plan_export

    groups, planned = plan_export(uri, dest, workers=3)
    assert groups == [Group(0, [], 0)] and planned.passthrough
    export_group(uri, dest, groups[0])
    committed = commit_export(uri, dest)
    assert (committed.dest, committed.passthrough) == (uri, True)
    assert not open_folder(dest).exists()  # nothing copied


def test_the_pipeline_export_copies_a_folder_with_training_state(stack_env: StackHandle, hf_folder: Path,
                                                                tmp_path: Path) -> None:
    from kfp.dsl import Model

    from tune2serve.components.checkpoint.manifest import read_manifest
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.export.component import export

    source = tmp_path / "with-state"
    shutil.copytree(hf_folder, source)
    (source / "optimizer.pt").write_bytes(b"optimizer state, never deployed")
    uri = stack_env.upload(source, "custom-weights/with-state")
    dest = f"gs://{stack_env.bucket}/exports/with-state"
    model = Model(name="model", uri=str(tmp_path / "model"), metadata={})
    out = export.python_func(source=uri, dest=dest, model=model)
    assert out.export_uri == dest and model.metadata["passthrough"] is False
    manifest = read_manifest(open_folder(dest))
    assert manifest is not None and "optimizer.pt" not in {e.name for e in manifest.files}
