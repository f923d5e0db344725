"""The export's path per byte (issue 26): each byte read once into the output file's
block, hashed there, written from there. What must hold whatever the sizes: the file is
exactly the bytes given, in order; sha256 and crc32c are those of the file; a fill that
is not where the file stands is refused; a failure anywhere stops the file; the base's
ranges read by ``read_into`` are the file's bytes, local or on GCS; and neither a plain
copy (nothing merged) nor a LoRA merge imports torch."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import google_crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.components.checkpoint.tensor_reader import SafetensorsFile
from tune2serve.components.errors import CheckpointError
from tune2serve.components.export.publish import shard_file as shard_file_module
from tune2serve.components.export.publish.shard_file import ShardFile
from tune2serve.components.export.publish.writer import Crc32c, _Hashing, _load_crc32c_extend, hash_file
from tune2serve.components.export.timing import Spans

_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_crc32c_uses_the_wheels_c_library_without_copies() -> None:
    """The zero-copy, GIL-free crc32c is the one in use here (else every byte of a GCS
    export is copied once more), and it is the CRC-32C GCS computes."""
    assert _load_crc32c_extend() is not None
    crc = Crc32c()
    assert crc._fallback is None
    crc.update(memoryview(bytearray(b"123456789")))
    assert crc.digest() == google_crc32c.Checksum(b"123456789").digest()


@_SETTINGS
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=6),
       kinds=st.lists(st.sampled_from(["bytes", "bytearray", "mmap"]), min_size=7, max_size=7),
       fallback=st.booleans())
def test_crc32c_of_any_split_is_googles(data: bytes, cuts: list[int], kinds: list[str], fallback: bool) -> None:
    """Fed in pieces of any size through read-only and writable buffers (and through the
    package's own Checksum where the library is not found), the digest is
    google_crc32c's of the whole."""
    import mmap

    crc = Crc32c()
    if fallback:
        crc._fallback = google_crc32c.Checksum()
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    for (a, b), kind in zip(zip(bounds, bounds[1:]), kinds):
        piece = data[a:b]
        if kind == "bytes":
            crc.update(memoryview(piece))
        elif kind == "bytearray":
            crc.update(memoryview(bytearray(piece)))
        else:
            m = mmap.mmap(-1, max(1, len(piece)))
            m[:len(piece)] = piece
            with memoryview(m) as whole, whole[:len(piece)] as view:
                crc.update(view)
            m.close()
    assert crc.digest() == google_crc32c.Checksum(data).digest()


def _direct_io_possible(folder: Path) -> bool:
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except (OSError, AttributeError):
        return False
    os.close(fd)
    (folder / "probe").unlink()
    return True


_OPS = st.lists(st.tuples(st.sampled_from(["fill", "copy"]), st.integers(1, 10_000), st.integers(0, 255)),
                min_size=0, max_size=25)


@_SETTINGS
@given(ops=_OPS, direct=st.booleans(), block=st.sampled_from([4096, 8192]), piece=st.sampled_from([1000, 4096, 5000]))
def test_shard_file_writes_exactly_what_it_was_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ops: list,
                                                     direct: bool, block: int, piece: int) -> None:
    """Any mix of in-place fills (of whatever part of the region lent) and copies, across
    any number of blocks and pieces, O_DIRECT or through the cache: the file holds the
    bytes in order, and sha256 and crc32c are the file's."""
    monkeypatch.setattr(shard_file_module, "BLOCK", block)
    monkeypatch.setattr(shard_file_module, "PIECE", piece)
    path = tmp_path / f"shard-{os.urandom(4).hex()}"
    hasher = _Hashing(crc=True)
    out = ShardFile(path, hasher.update, Spans(), direct=direct)
    want = bytearray()
    for kind, n, value in ops:
        if kind == "fill":
            region = out.reserve(n)
            assert 0 < region.nbytes <= n
            used = region[:max(1, region.nbytes - value % 3)]  # sometimes less than was lent
            used[:] = bytes([value]) * used.nbytes
            out.write(used)
            want += bytes([value]) * used.nbytes
        else:
            data = os.urandom(n)
            out.write(memoryview(data))
            want += data
    was_direct = out.direct
    out.close(fsync=True)
    assert path.read_bytes() == bytes(want)
    written = hasher.result(len(want))
    assert written.sha256 == hashlib.sha256(want).hexdigest()
    assert written.crc32c == base64.b64encode(google_crc32c.Checksum(bytes(want)).digest()).decode()
    assert hash_file(path) == written
    assert was_direct == (direct and _direct_io_possible(tmp_path))  # whole blocks around the cache where it can


def test_shard_file_refuses_a_fill_that_is_not_where_the_file_stands(tmp_path: Path) -> None:
    """Only the region just lent counts as filled in place: a view of the block elsewhere,
    or longer than what was lent, is a bug upstream and refused."""
    out = ShardFile(tmp_path / "x", lambda view: None, Spans())
    region = out.reserve(100)
    out.write(region[:10])
    later = out.reserve(100)
    with pytest.raises(ValueError, match="reserve"):
        out.write(later[5:20])
    region = out.reserve(10)
    with pytest.raises(ValueError, match="reserve"):
        out.write(memoryview(region.obj)[region.nbytes:region.nbytes + 40])  # type: ignore[arg-type]
    out.close(fsync=False)


def test_a_hashing_failure_stops_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error on the hashing thread is raised to the producer (by a later write or by
    close), and the file is closed; nothing hangs."""
    monkeypatch.setattr(shard_file_module, "BLOCK", 4096)
    monkeypatch.setattr(shard_file_module, "PIECE", 1000)

    def broken(view: memoryview) -> None:
        raise OSError("hash exploded")

    out = ShardFile(tmp_path / "x", broken, Spans())
    with pytest.raises(OSError, match="hash exploded"):
        for _ in range(200):  # 4 blocks in flight at most: the failure is seen long before the end
            out.write(memoryview(os.urandom(1500)))
    with pytest.raises(OSError, match="hash exploded"):
        out.close(fsync=True)
    assert out.fd == -1


@_SETTINGS
@given(ranges=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), min_size=1, max_size=10))
def test_read_into_reads_the_tensors_bytes(tmp_path_factory: pytest.TempPathFactory, ranges: list) -> None:
    """Any range of any tensor, read into a buffer, is that range of the tensor's bytes in
    the file (as the memory map gives them)."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("st")
    save_file({"a": torch.arange(1000, dtype=torch.int32), "b": torch.arange(1300, dtype=torch.int16)},
              str(folder / "m.safetensors"))
    f = SafetensorsFile(folder / "m.safetensors", "m.safetensors")
    try:
        for name in ("a", "b"):
            size = f.infos[name].nbytes
            for x, y in ranges:
                start, end = sorted((x % (size + 1), y % (size + 1)))
                buf = bytearray(end - start)
                f.read_into(name, start, memoryview(buf))
                assert bytes(buf) == bytes(f.mapped(name, start, end - start))
                f.unmap(name, start, end - start)
        with pytest.raises(CheckpointError, match="outside the tensor"):
            f.read_into("a", 3999, memoryview(bytearray(2)))
    finally:
        f.close()


def test_read_into_names_a_truncated_shard(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.arange(1000, dtype=torch.int32)}, str(tmp_path / "m.safetensors"))
    f = SafetensorsFile(tmp_path / "m.safetensors", "m.safetensors")
    with open(tmp_path / "m.safetensors", "r+b") as fh:
        fh.truncate(os.path.getsize(tmp_path / "m.safetensors") - 100)
    with pytest.raises(CheckpointError, match="m.safetensors: the file is truncated"):
        f.read_into("a", 0, memoryview(bytearray(16)))
    f.close()


def _export_in_a_fresh_process(source: Path, dest: Path) -> dict[str, object]:
    """Exports in a new interpreter (nothing imported yet) and says whether torch got imported."""
    code = ("import json, sys\nfrom tune2serve.components.export.export import export_checkpoint\n"
            "r = export_checkpoint(sys.argv[1], sys.argv[2], max_shard_size='100KB')\n"
            "print(json.dumps({'torch': 'torch' in sys.modules, 'files': len(r.files), 'merge': r.merge is not None}))")
    done = subprocess.run([sys.executable, "-c", code, str(source), str(dest)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_plain_copy_never_imports_torch(tiny_llama_bf16: Path, tmp_path: Path) -> None:
    """Exporting a full checkpoint already in its dtype moves bytes only: no torch import
    (seconds of CPU at every start), and the bytes are the base's."""
    report = _export_in_a_fresh_process(tiny_llama_bf16, tmp_path / "out")
    assert report["torch"] is False and report["files"] > 3 and report["merge"] is False

    from safetensors import safe_open

    exported = {}
    for shard in sorted((tmp_path / "out").glob("*.safetensors")):
        with safe_open(str(shard), "pt") as fh:
            exported.update({k: fh.get_tensor(k) for k in fh.keys()})
    base = {}
    for shard in sorted(tiny_llama_bf16.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as fh:
            base.update({k: fh.get_tensor(k) for k in fh.keys()})
    assert exported.keys() == base.keys()
    assert all(exported[k].dtype == base[k].dtype and exported[k].equal(base[k]) for k in base)


@pytest.mark.parametrize("options", [
    dict(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    dict(r=4, lora_alpha=8, use_dora=True, use_rslora=True, target_modules=["q_proj", "down_proj"]),
], ids=["lora", "dora-rslora"])
def test_a_lora_merge_never_imports_torch(options: dict[str, object], tiny_llama_bf16: Path, tmp_path: Path) -> None:
    """A LoRA (or per-row DoRA) adapter of matrices only, merged into a bf16 base: the
    adapter is read as float32 arrays and every target merged by the fused kernel, so
    the export never imports torch (its 1.5-2.5 s import was the merge's critical path),
    and what it writes is PEFT's merge, to within bf16 rounding."""
    from tests.export.conftest import assert_matches, make_adapter, peft_merged, read_export

    adapter = make_adapter(tiny_llama_bf16, tmp_path / "adapter", **options)
    report = _export_in_a_fresh_process(adapter, tmp_path / "out")
    assert report["torch"] is False and report["merge"] is True
    assert_matches(read_export(tmp_path / "out"), peft_merged(tiny_llama_bf16, adapter), tied=False,
                   atol=1e-3, rtol=2 ** -7)


def test_read_into_from_gcs_is_the_files_bytes(tiny_llama: Path, gcs_bucket: str) -> None:
    """A gs:// base read into buffers through small windows (so reads straddle them) gives
    the local file's bytes, and once read to its end keeps no window in memory."""
    from tests.conftest import upload_folder
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.export.source.remote import RemoteSafetensorsFile

    upload_folder(tiny_llama, gcs_bucket, "m")
    local = SafetensorsFile(tiny_llama / "model.safetensors", "model.safetensors")
    remote = RemoteSafetensorsFile(open_folder(f"gs://{gcs_bucket}/m"), "model.safetensors", chunk=4099)
    try:
        for name, info in sorted(remote.infos.items(), key=lambda kv: kv[1].begin):
            for start in range(0, info.nbytes, 10_007):
                got, want = bytearray(min(10_007, info.nbytes - start)), bytearray(min(10_007, info.nbytes - start))
                remote.read_into(name, start, memoryview(got))
                local.read_into(name, start, memoryview(want))
                assert got == want, (name, start)
        with pytest.raises(CheckpointError, match="outside the tensor"):
            remote.read_into(name, info.nbytes, memoryview(bytearray(1)))
        assert remote._reads == {}
    finally:
        remote.close()
        local.close()


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 50_000), rows=st.integers(1, 300), row_bytes=st.sampled_from([2, 4, 6, 8, 100, 4094, 5000]),
       per_chunk=st.integers(1, 40), element=st.sampled_from([1, 2, 4, 8]), block=st.sampled_from([4096, 8192]))
def test_row_blocks_cover_the_rows_and_fill_in_place_only_within_a_block(position: int, rows: int, row_bytes: int,
                                                                          per_chunk: int, element: int,
                                                                          block: int) -> None:
    """The merge's schedule, made before the first row is read: every row once, in order;
    a block filled in place lies within one block of the file, at an address aligned for
    the dtype, and holds at most ``per_chunk`` rows; anything else is one row (across a
    block boundary) or an unaligned run, merged apart and copied."""
    from tune2serve.components.export.merge.stream import row_blocks

    got = row_blocks(position, rows, row_bytes, per_chunk, element, block)
    assert [r for r, _, _ in got] == [sum(n for _, n, _ in got[:i]) for i in range(len(got))]
    assert sum(n for _, n, _ in got) == rows
    pos = position
    for _, n, in_place in got:
        assert 1 <= n <= per_chunk
        if in_place:
            assert pos % element == 0 and pos // block == (pos + n * row_bytes - 1) // block
        else:
            assert n == 1 or pos % element != 0
        pos += n * row_bytes
