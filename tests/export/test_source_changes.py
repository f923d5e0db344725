"""A source that changes under the export (issue 21 item 4), and one listing per source.

Every source folder is listed once when the export starts and read at the generations
that listing saw (``Folder.pinned``). A base shard on fake-gcs-server replaced (same size,
other bytes: no size check can notice) or deleted between two output shards — at a
generated moment, shard and way — ends in one of two ways only: exit 0 with an export
equal to the export of the source as it was, or exit 1 naming the object ("source
changed") with nothing left at DEST. Never an export mixing old and new bytes.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import upload_folder
from tests.export.conftest import make_adapter
from tests.export.publish_helpers import no_traceback, snapshot

SHARD = "60KB"


def _comparable(files: dict[str, bytes]) -> dict[str, Any]:
    """An export's files, with the manifest reduced to its file list (it names the source
    URI, which differs between the runs compared)."""
    out: dict[str, Any] = {n: b for n, b in files.items() if n != "manifest.json"}
    if "manifest.json" in files:
        out["manifest.json"] = json.loads(files["manifest.json"])["files"]
    return out


def test_a_base_shard_replaced_or_deleted_mid_export_never_mixes(tiny_qwen_sharded: Path, gcs_bucket: str,
                                                                 cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tune2serve.components.checkpoint.storage import storage_client
    from tune2serve.components.export import export as export_module

    bucket = storage_client().bucket(gcs_bucket)
    base_shards = sorted(p.name for p in tiny_qwen_sharded.glob("*.safetensors"))
    assert len(base_shards) >= 4
    reference = None
    real = export_module.write_shard
    outcomes: list[int] = []

    @settings(max_examples=8, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(victim=st.sampled_from(base_shards), after=st.integers(0, 4), delete=st.booleans())
    def case(victim: str, after: int, delete: bool) -> None:
        nonlocal reference
        prefix = f"bases/{uuid.uuid4().hex[:8]}"
        source = upload_folder(tiny_qwen_sharded, gcs_bucket, prefix)
        if reference is None:
            reference = _comparable(snapshot(export_module.export_checkpoint(
                source, f"gs://{gcs_bucket}/ref", max_shard_size=SHARD).dest))
        calls = []

        def write_shard(*args: Any, **kwargs: Any) -> Any:
            written = real(*args, **kwargs)
            calls.append(1)
            if len(calls) == after + 1:  # between two output shards, the source changes
                blob = bucket.blob(f"{prefix}/{victim}")
                if delete:
                    blob.delete()
                else:
                    data = bytearray(blob.download_as_bytes())
                    for i in range(len(data) - 64, len(data)):  # tensor bytes, not the header
                        data[i] ^= 0xFF
                    blob.upload_from_string(bytes(data))
            return written

        monkeypatch.setattr(export_module, "write_shard", write_shard)
        dest = f"gs://{gcs_bucket}/exports/{uuid.uuid4().hex[:8]}"
        code, _, err = cli("export", source, dest, "--max-shard-size", SHARD)
        monkeypatch.setattr(export_module, "write_shard", real)
        no_traceback(err)
        outcomes.append(code)
        if code == 0:  # everything of the victim had been read before it changed
            assert _comparable(snapshot(dest)) == reference, (victim, after, delete)
        else:
            assert code == 1, err[-2000:]
            assert "source changed" in err and f"{source}/{victim}" in err, err[-2000:]
            assert snapshot(dest) == {}, (victim, after, delete)

    case()
    assert 1 in outcomes, "no change was ever caught: the test never raced the reads"


def test_a_changed_shard_is_named_and_nothing_is_published(tiny_qwen_sharded: Path, gcs_bucket: str, cli: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The deterministic case: the last base shard replaced right after the first output
    shard is written (its bytes not read yet): exit 1, "source changed", the object named."""
    from tune2serve.components.checkpoint.storage import storage_client
    from tune2serve.components.export import export as export_module

    source = upload_folder(tiny_qwen_sharded, gcs_bucket, "bases/q")
    last = sorted(p.name for p in tiny_qwen_sharded.glob("*.safetensors"))[-1]
    real = export_module.write_shard
    calls: list[int] = []

    def write_shard(*args: Any, **kwargs: Any) -> Any:
        written = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            blob = storage_client().bucket(gcs_bucket).blob(f"bases/q/{last}")
            data = bytearray(blob.download_as_bytes())
            data[-1] ^= 0xFF
            blob.upload_from_string(bytes(data))
        return written

    monkeypatch.setattr(export_module, "write_shard", write_shard)
    dest = f"gs://{gcs_bucket}/out"
    code, doc, err = cli("export", source, dest, "--max-shard-size", SHARD, "--json")
    assert code == 1 and doc is not None and doc["ok"] is False
    assert f"{source}/{last}: source changed" in err, err[-2000:]
    no_traceback(err)
    assert snapshot(dest) == {}


def test_each_source_prefix_is_listed_once(tiny_llama: Path, gcs_bucket: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An adapter in a Vertex tuning tree merged into a gs:// base, as the pipeline runs it
    (``pass_through`` asked first): the tuning output is listed once and the base once
    (four listings of the source before: pass-through, layout, top level, fingerprints)."""
    from tune2serve.components.checkpoint.storage import GcsFolder
    from tune2serve.components.export.export import export_checkpoint

    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    base = upload_folder(tiny_llama, gcs_bucket, "bases/tiny")
    upload_folder(adapter, gcs_bucket, "runs/1/postprocess/node-0/checkpoints/final")
    source = f"gs://{gcs_bucket}/runs/1"
    listed: list[str] = []
    real = GcsFolder.list

    def counting(self: GcsFolder) -> Any:
        if self._pinned is None:
            listed.append(self.uri)
        return real(self)

    monkeypatch.setattr(GcsFolder, "list", counting)
    result = export_checkpoint(source, f"gs://{gcs_bucket}/out", base_model=base, max_shard_size="100KB",
                               pass_through=True)
    assert not result.passthrough and result.files
    assert listed.count(source) == 1 and listed.count(base) == 1, listed
