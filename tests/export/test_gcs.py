"""gs:// sources and destinations through the real client against fake-gcs-server."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import google_crc32c

from tests.conftest import upload_folder
from tests.export.conftest import assert_matches, make_adapter, peft_merged, read_export


def _objects(bucket: str, prefix: str) -> dict[str, Any]:
    from tune2serve.components.checkpoint.storage import storage_client

    return {b.name[len(prefix) + 1:]: b for b in storage_client().list_blobs(bucket, prefix=prefix + "/")}


def test_gcs_source_and_destination(tiny_llama: Path, gcs_bucket: str, tmp_path: Path, cli: Any, validate_ok: Any) -> None:
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                           use_dora=True)
    base_uri = upload_folder(tiny_llama, gcs_bucket, "bases/tiny-llama")
    adapter_uri = upload_folder(adapter, gcs_bucket, "runs/1/postprocess/node-0/checkpoints/final")
    dest = f"gs://{gcs_bucket}/exports/1"
    code, doc, err = cli("export", f"gs://{gcs_bucket}/runs/1", dest, "--base-model", base_uri, "--json",
                         "--max-shard-size", "100KB")
    assert code == 0, err
    assert doc["source_kind"] == "vertex-tuning" and doc["dest"] == dest and adapter_uri.endswith("final")
    objects = _objects(gcs_bucket, "exports/1")
    assert sorted(objects) == sorted({f["name"] for f in doc["files"]} | {"manifest.json"})  # no _staging left
    for f in doc["files"]:  # crc32c recorded for GCS, equal to what GCS computed
        blob = objects[f["name"]]
        assert blob.size == f["size"] and blob.crc32c == f["crc32c"]
    validate_ok(dest)

    local = tmp_path / "downloaded"
    local.mkdir()
    for name, blob in objects.items():
        blob.download_to_filename(str(local / name))
    assert_matches(read_export(local), peft_merged(tiny_llama, adapter), tied=False)
    expected = base64.b64encode(google_crc32c.Checksum(local.joinpath("config.json").read_bytes()).digest()).decode()
    assert {f["name"]: f["crc32c"] for f in doc["files"]}["config.json"] == expected

    code, again, err = cli("export", f"gs://{gcs_bucket}/runs/1", dest, "--base-model", base_uri, "--json",
                           "--max-shard-size", "100KB")
    assert code == 0 and again["noop"] is True


def test_gcs_destination_bad_input_leaves_nothing(tiny_llama: Path, gcs_bucket: str, tmp_path: Path, cli: Any) -> None:
    from safetensors.torch import load_file, save_file

    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    path = adapter / "adapter_model.safetensors"
    save_file({k.replace("q_proj", "qkv_proj"): v for k, v in load_file(path).items()}, path)
    code, _, err = cli("export", adapter, f"gs://{gcs_bucket}/exports/bad", "--base-model", tiny_llama)
    assert code == 1 and "has no tensor model.layers.0.self_attn.qkv_proj.weight" in err
    assert _objects(gcs_bucket, "exports/bad") == {}


def test_gcs_destination_bucket_missing(tiny_llama: Path, gcs_bucket: str, tmp_path: Path, cli: Any) -> None:
    code, _, err = cli("export", tiny_llama, f"gs://{gcs_bucket}-missing/exports/1")
    assert code == 1 and "cannot be written" in err
