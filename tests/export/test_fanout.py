"""The fanned-out export (plan → one worker per shard group → commit) and the GCS→GCS
streaming path: the same bytes as the single-worker export, local disk bounded, nothing
visible as complete before the commit. Real fake-gcs-server, real storage client."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import upload_folder
from tests.export.conftest import make_adapter
from tune2serve.components.export.export import export_checkpoint
from tune2serve.components.export.fanout.fanout import Group, commit_export, export_group, plan_export, split

SHARD = "60KB"


def _blobs(bucket: str, prefix: str) -> dict[str, bytes]:
    from tune2serve.components.checkpoint.storage import storage_client

    return {b.name[len(prefix) + 1:]: b.download_as_bytes()
            for b in storage_client().list_blobs(bucket, prefix=prefix + "/")}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_split_is_contiguous_balanced_and_bounded() -> None:
    shards = [(f"s{i}", 10) for i in range(10)]
    groups = split(shards, workers=3, min_worker_bytes=1)
    assert [g.shards for g in groups] == [["s0", "s1", "s2"], ["s3", "s4", "s5", "s6"], ["s7", "s8", "s9"]]
    assert split(shards, workers=8, min_worker_bytes=40) == [Group(0, ["s0", "s1", "s2", "s3", "s4"], 50),
                                                              Group(1, ["s5", "s6", "s7", "s8", "s9"], 50)]
    assert len(split(shards, workers=32, min_worker_bytes=1)) == 10  # never more groups than shards
    assert len(split(shards, workers=8, min_worker_bytes=10**9)) == 1  # a small model keeps one worker
    assert split([], workers=4, min_worker_bytes=1) == [Group(0, [], 0)]


def _fanout(source: str, dest: str, workers: int, **options: Any) -> list[Group]:
    groups, planned = plan_export(source, dest, workers=workers, min_worker_bytes=1, **options)
    assert not planned.noop and planned.files == []
    for group in reversed(groups):  # order does not matter: each worker owns its shards
        export_group(source, dest, group, **options)
    return groups


def test_fanout_equals_single_worker_byte_for_byte_gcs(tiny_llama: Path, gcs_bucket: str, tmp_path: Path,
                                                       validate_ok: Any) -> None:
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    base = upload_folder(tiny_llama, gcs_bucket, "bases/tiny")
    source = upload_folder(adapter, gcs_bucket, "runs/1")
    options = {"base_model": base, "max_shard_size": SHARD}
    single = export_checkpoint(source, f"gs://{gcs_bucket}/single", **options)
    dest = f"gs://{gcs_bucket}/fanout"
    groups = _fanout(source, dest, workers=3, **options)
    assert len(groups) == 3 and all(g.shards for g in groups)
    staged = _blobs(gcs_bucket, "fanout")
    assert "manifest.json" not in staged and all(n.startswith("_staging/") for n in staged)  # nothing visible yet
    assert {f"state-{g.index}.json" for g in groups} <= {n.removeprefix("_staging/") for n in staged}
    done = commit_export(source, dest, **options)
    assert done.manifest_digest == single.manifest_digest
    assert _blobs(gcs_bucket, "fanout") == _blobs(gcs_bucket, "single")
    validate_ok(dest)
    again, _ = plan_export(source, dest, workers=3, min_worker_bytes=1, **options)
    assert again == [Group(0, [], 0)]  # a finished export: one empty group, the workers and commit are no-ops
    assert commit_export(source, dest, **options).noop


def test_fanout_equals_single_worker_local_and_commit_writes_what_a_worker_missed(
        tiny_qwen_sharded: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_qwen_sharded, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    options = {"base_model": str(tiny_qwen_sharded), "max_shard_size": SHARD}
    export_checkpoint(str(adapter), str(tmp_path / "single"), **options)
    groups, _ = plan_export(str(adapter), str(tmp_path / "fanout"), workers=2, min_worker_bytes=1, **options)
    export_group(str(adapter), str(tmp_path / "fanout"), groups[0], **options)  # worker 1 never ran
    commit_export(str(adapter), str(tmp_path / "fanout"), **options)
    assert _files(tmp_path / "fanout") == _files(tmp_path / "single")


def test_worker_refuses_a_shard_the_plan_does_not_have(tiny_llama: Path, tmp_path: Path) -> None:
    from tune2serve.components.errors import UsageError

    with pytest.raises(UsageError, match="does not have"):
        export_group(str(tiny_llama), str(tmp_path / "out"), Group(0, ["model-00009-of-00009.safetensors"], 0))


def test_gcs_to_gcs_keeps_local_disk_within_two_shards(tiny_qwen_sharded: Path, gcs_bucket: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The gs:// base is read by range (never downloaded) and each output shard leaves
    local disk once uploaded: sampled, the scratch folder never holds more than two
    shards plus the small files, and never a base shard."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    base = upload_folder(tiny_qwen_sharded, gcs_bucket, "bases/qwen")
    peak, names, stop = [0], set(), threading.Event()

    def sample() -> None:
        while not stop.is_set():
            files = [p for p in scratch.rglob("*") if p.is_file()]
            names.update(p.relative_to(scratch).parts[1] for p in files if len(p.relative_to(scratch).parts) > 2)
            peak[0] = max(peak[0], sum(p.stat().st_size for p in files if p.exists()))
            stop.wait(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = export_checkpoint(base, f"gs://{gcs_bucket}/out", max_shard_size="30KB")
    finally:
        stop.set()
        sampler.join()
    shards = [f for f in result.files if f["name"].endswith(".safetensors")]
    assert len(shards) >= 5
    small = sum(f["size"] for f in result.files if not f["name"].endswith(".safetensors"))
    assert peak[0] <= 2 * max(f["size"] for f in shards) + small
    assert "weights" not in names, "the base was downloaded"  # export's scratch: out/ (shards) and weights/ (downloads)


def test_ranged_reads_return_the_file_bytes_and_keep_no_window_behind(tiny_llama: Path, gcs_bucket: str) -> None:
    """Every tensor read through small windows (so ranges straddle them) equals the local
    file's bytes; once the file is read to its end no window stays in memory."""
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.checkpoint.tensor_reader import SafetensorsFile
    import torch

    from tune2serve.components.export.source.remote import RemoteSafetensorsFile

    upload_folder(tiny_llama, gcs_bucket, "m")
    local = SafetensorsFile(tiny_llama / "model.safetensors", "model.safetensors")
    remote = RemoteSafetensorsFile(open_folder(f"gs://{gcs_bucket}/m"), "model.safetensors", chunk=4099)
    try:
        assert remote.metas == local.metas
        for name, info in sorted(remote.infos.items(), key=lambda kv: kv[1].begin):
            step = 3001
            for start in range(0, info.nbytes, step):
                n = min(step, info.nbytes - start)
                got = remote.mapped(name, start, n)
                want = local.mapped(name, start, n)
                assert bytes(got) == bytes(want), (name, start)
            assert remote.read(name).view(-1).view(torch.uint8).equal(local.read(name).view(-1).view(torch.uint8))
        assert remote._reads == {}
    finally:
        remote.close()
        local.close()


def test_ranged_reads_reuse_a_fixed_set_of_buffers_and_threads_across_files(tiny_llama: Path, gcs_bucket: str) -> None:
    """Two files read through many small windows, every range mapped then unmapped as the
    stream does: the bytes are the file's, every buffer comes back, and only a few buffers
    and at most ``AHEAD`` reader threads ever exist, however many windows and files
    (a buffer or a thread pool per window or file made peak RSS grow with the shards)."""
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.checkpoint.tensor_reader import SafetensorsFile
    from tune2serve.components.export.source import remote

    chunk = 4097  # a window size of this test's own, so its buffer pool is fresh
    local = SafetensorsFile(tiny_llama / "model.safetensors", "model.safetensors")
    windows = 0
    try:
        for prefix in ("a", "b"):
            upload_folder(tiny_llama, gcs_bucket, prefix)
            f = remote.RemoteSafetensorsFile(open_folder(f"gs://{gcs_bucket}/{prefix}"), "model.safetensors", chunk=chunk)
            try:
                for name, info in sorted(f.infos.items(), key=lambda kv: kv[1].begin):
                    for start in range(0, info.nbytes, 3001):
                        n = min(3001, info.nbytes - start)
                        got = f.mapped(name, start, n)
                        assert bytes(got) == bytes(local.mapped(name, start, n)), (prefix, name, start)
                        f.unmap(name, start, n)
                windows += f._windows
            finally:
                f.close()
        readers = [t for t in threading.enumerate() if t.name.startswith("ranged-read")]
        assert 0 < len(readers) <= remote.AHEAD
    finally:
        local.close()
    pool = remote._buffers(chunk)
    assert pool._slots._value == 1 << 20, "a buffer was never given back"
    assert windows > 50 and len(pool._free) <= remote.AHEAD + 4, (windows, len(pool._free))


def test_gcs_bin_base_is_downloaded_and_exports_as_from_local(tiny_llama_bin: Path, gcs_bucket: str,
                                                              tmp_path: Path) -> None:
    """A ``.bin`` base cannot be read by range (the pickle is scanned whole): it is
    downloaded file by file and exports exactly as from local disk."""
    from tests.export.conftest import read_export

    base = upload_folder(tiny_llama_bin, gcs_bucket, "bases/bin")
    export_checkpoint(base, str(tmp_path / "from-gcs"))
    export_checkpoint(str(tiny_llama_bin), str(tmp_path / "from-local"))
    gcs, local = read_export(tmp_path / "from-gcs"), read_export(tmp_path / "from-local")
    assert set(gcs) == set(local) and all(gcs[k].equal(local[k]) for k in local)
