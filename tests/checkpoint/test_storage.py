"""The storage abstraction on local disk and on a real fake-gcs-server."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tests.conftest import upload_folder
from tune2serve.components.checkpoint.safetensors_header import read_header
from tune2serve.components.checkpoint.storage import GcsFolder, LocalFolder, open_folder
from tune2serve.components.errors import SourceNotFoundError, SourceReadError, UsageError


def test_open_folder_picks_the_implementation(tmp_path: Path) -> None:
    assert isinstance(open_folder(tmp_path), LocalFolder)
    assert isinstance(open_folder("gs://bucket/a/b"), GcsFolder)
    with pytest.raises(UsageError, match="unsupported scheme"):
        open_folder("s3://bucket/x")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "C:\\x.safetensors", "a/../../b"])
def test_names_that_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SourceReadError, match="outside the checkpoint folder"):
        LocalFolder(tmp_path).read_bytes(name)


def test_symlink_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    os.symlink(outside, folder / "model.safetensors")
    listed = LocalFolder(folder).list()
    assert listed[0].name == "model.safetensors" and listed[0].is_symlink_outside
    with pytest.raises(SourceReadError, match="symlink that leaves the checkpoint folder"):
        LocalFolder(folder).read_bytes("model.safetensors")


def test_local_ranged_read_counts_bytes(tiny_llama: Path) -> None:
    folder = LocalFolder(tiny_llama)
    header = read_header(folder, "model.safetensors")
    assert header.problems == []
    assert folder.bytes_read == 8 + header.header_size
    assert folder.bytes_read < folder.size("model.safetensors") / 10


def test_missing_local_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="no such folder"):
        LocalFolder(tmp_path / "nope").list()


def test_gcs_list_and_ranged_header_read(tiny_qwen_sharded: Path, gcs_bucket: str) -> None:
    uri = upload_folder(tiny_qwen_sharded, gcs_bucket, "runs/r1/final")
    folder = open_folder(uri)
    names = [o.name for o in folder.list()]
    local_names = sorted(p.name for p in tiny_qwen_sharded.iterdir())
    assert names == local_names
    shard = next(n for n in names if n.endswith(".safetensors"))
    header = read_header(folder, shard)
    local_header = read_header(LocalFolder(tiny_qwen_sharded), shard)
    assert header.tensors == local_header.tensors
    # Only the 8-byte length and the JSON header travelled, not the tensor data.
    assert folder.bytes_read == 8 + header.header_size
    assert folder.bytes_read < header.file_size


def test_gcs_write_read_delete_roundtrip(gcs_bucket: str, tmp_path: Path) -> None:
    folder = open_folder(f"gs://{gcs_bucket}/exports/x")
    folder.write_bytes("a/b.json", b'{"k": 1}')
    assert folder.read_bytes("a/b.json") == b'{"k": 1}'
    assert folder.read_range("a/b.json", 2, 3) == b'k":'
    assert folder.has("a/b.json") and folder.size("a/b.json") == 8
    folder.delete("a/b.json")
    assert not folder.has("a/b.json")


def test_gcs_missing_prefix_and_object(gcs_bucket: str) -> None:
    folder = open_folder(f"gs://{gcs_bucket}/does/not/exist")
    with pytest.raises(SourceNotFoundError, match="no objects under this prefix"):
        folder.list()
    with pytest.raises(SourceNotFoundError, match="not found"):
        folder.read_bytes("config.json")


def test_listings_say_when_each_file_was_written(tmp_path: Path, gcs_bucket: str) -> None:
    """Local: the file's mtime; GCS: the object's ``updated``, from the listing itself.
    Equality ignores it: the same bytes written again are the same file."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old.json").write_text("{}")
    (tmp_path / "new.json").write_text("{}")
    os.utime(tmp_path / "a" / "old.json", (1000, 1000))
    os.utime(tmp_path / "new.json", (2000, 2000))
    assert [(o.name, o.updated) for o in LocalFolder(tmp_path).list()] == [("a/old.json", 1000.0), ("new.json", 2000.0)]

    import time

    before = time.time()
    folder = open_folder(f"gs://{gcs_bucket}/times")
    folder.write_bytes("x.json", b"{}")
    (listed,) = folder.list()
    assert listed.updated is not None and before - 60 < listed.updated < time.time() + 60
    assert listed == dataclasses.replace(listed, updated=None)


def test_store_exists_tells_an_empty_prefix_from_a_missing_bucket(tmp_path: Path, gcs_bucket: str) -> None:
    empty = open_folder(f"gs://{gcs_bucket}/nothing/yet")
    with pytest.raises(SourceNotFoundError):
        empty.list()
    assert empty.store_exists() is True
    missing = open_folder(f"gs://{gcs_bucket}-missing/nothing/yet")
    with pytest.raises(SourceNotFoundError):
        missing.list()
    assert missing.store_exists() is False
    assert LocalFolder(tmp_path / "nope").store_exists() is True  # local disk is always there


def test_remote_folders_ask_for_concurrent_reads(tmp_path: Path) -> None:
    assert LocalFolder(tmp_path).parallel_reads() == 1
    assert GcsFolder("gs://bucket/x").parallel_reads() > 1
