"""A folder's identity (deploy's idempotence key) from its listing or its manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tune2serve.components.checkpoint.identity import MANIFEST, check_listing, folder_identity, listing_digest
from tune2serve.components.checkpoint.manifest import MANIFEST_NAME, Manifest, ManifestEntry
from tune2serve.components.checkpoint.storage import LocalFolder, ObjectInfo
from tune2serve.components.errors import CheckpointError

LISTED = [ObjectInfo("model.safetensors", 10, crc32c="AAAAAA=="), ObjectInfo("config.json", 2, crc32c="BBBBBB==")]


def test_listing_digest_is_sha256_over_sorted_name_size_crc32c() -> None:
    want = hashlib.sha256(b"config.json\x002\x00crc32c:BBBBBB==\nmodel.safetensors\x0010\x00crc32c:AAAAAA==\n")
    assert listing_digest(LISTED) == listing_digest(LISTED[::-1]) == want.hexdigest()


@pytest.mark.parametrize("changed", [ObjectInfo("model.safetensors", 10, crc32c="CCCCCC=="),
                                     ObjectInfo("model.safetensors", 11, crc32c="AAAAAA=="),
                                     ObjectInfo("model-renamed.safetensors", 10, crc32c="AAAAAA==")])
def test_any_one_object_changed_changes_the_digest(changed: ObjectInfo) -> None:
    assert listing_digest([changed, LISTED[1]]) != listing_digest(LISTED)


def test_the_generation_stands_in_for_a_missing_crc32c_and_no_identity_is_refused() -> None:
    assert listing_digest([ObjectInfo("a", 1, generation=7)]) != listing_digest([ObjectInfo("a", 1, generation=8)])
    with pytest.raises(CheckpointError, match=r"a: the listing gives no crc32c or generation"):
        listing_digest([ObjectInfo("a", 1)])


def test_a_manifest_is_checked_against_the_listing() -> None:
    manifest = Manifest([ManifestEntry("model.safetensors", 10, "0" * 64, "AAAAAA=="),
                         ManifestEntry("config.json", 2, "1" * 64)])
    check_listing(manifest, LISTED, "gs://b/x")  # matches: no error
    with pytest.raises(CheckpointError, match=r"gs://b/x/model.safetensors: has crc32c CCCCCC==, the manifest says AAAAAA=="):
        check_listing(manifest, [ObjectInfo("model.safetensors", 10, crc32c="CCCCCC=="), LISTED[1]], "gs://b/x")
    with pytest.raises(CheckpointError, match=r"gs://b/x/config.json: is 3 bytes, the manifest says 2"):
        check_listing(manifest, [LISTED[0], ObjectInfo("config.json", 3)], "gs://b/x")
    with pytest.raises(CheckpointError, match=r"gs://b/x/config.json: is missing"):
        check_listing(manifest, LISTED[:1], "gs://b/x")


def test_folder_identity_prefers_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    manifest = Manifest([ManifestEntry("config.json", 2, "1" * 64)])
    (tmp_path / MANIFEST_NAME).write_text(manifest.to_json())
    found = folder_identity(LocalFolder(tmp_path))
    assert (found.basis, found.digest, found.files) == (MANIFEST, manifest.digest(), 1)
    (tmp_path / MANIFEST_NAME).unlink()
    with pytest.raises(CheckpointError, match="no crc32c or generation"):  # local listings carry no identity
        folder_identity(LocalFolder(tmp_path))
