"""Writes safetensors shards one tensor at a time, hashing as it writes.

The shard plan is made before anything is written (every output tensor's name, dtype
and shape is known from the headers), so each shard's header is written first and the
tensors are then streamed into it as chunks as they are produced: memory holds a few
chunks, never a shard. sha256 and crc32c are computed on the way (``shard_file``), so
the manifest needs no second read.

Layout is the Hugging Face one: ``model-0000i-of-0000N.safetensors`` plus
``model.safetensors.index.json``, written even for a single shard so every export looks
the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tune2serve.components import ranges
from tune2serve.components.checkpoint.index import SAFETENSORS_INDEX
from tune2serve.components.errors import CheckpointError

if TYPE_CHECKING:
    from tune2serve.components.export.timing import Spans

_CRC_CHUNK = 8 << 20
_DEPTH = 3  # chunks queued for the writer: with the producer's own, bounds memory in flight
_ELEMENT_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}


def parse_size(text: str | int) -> int:
    """``"5GB"`` → 5·10⁹ (decimal units, as transformers' ``max_shard_size``), ``"2GiB"``
    → 2·2³⁰, a bare number is bytes; in ``--max-shard-size``'s documented range
    (``components.ranges``: one parser for every size a user gives)."""
    return ranges.MAX_SHARD_SIZE.bytes(text)


@dataclass(frozen=True)
class OutTensor:
    name: str
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = _ELEMENT_BYTES.get(self.dtype, 1)
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ShardPlan:
    name: str
    tensors: list[OutTensor]

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def plan_shards(tensors: list[OutTensor], max_bytes: int) -> list[ShardPlan]:
    """Greedy packing in the given order (the base's file order, so reads stay
    sequential); a tensor larger than the limit gets a shard of its own."""
    groups: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if groups[-1] and size + t.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.nbytes
    n = len(groups)
    return [ShardPlan(f"model-{i + 1:05d}-of-{n:05d}.safetensors", g) for i, g in enumerate(groups)]


def shard_header(tensors: list[OutTensor]) -> bytes:
    """The 8-byte length + JSON header (padded with spaces to 8 bytes, as safetensors does)."""
    doc: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        doc[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def index_json(shards: list[ShardPlan]) -> bytes:
    weight_map = {t.name: s.name for s in shards for t in s.tensors}
    doc = {"metadata": {"total_size": sum(s.data_bytes for s in shards)}, "weight_map": dict(sorted(weight_map.items()))}
    return (json.dumps(doc, indent=2) + "\n").encode()


@dataclass(frozen=True)
class Written:
    size: int
    sha256: str
    crc32c: str


class _Hashing:
    """sha256 (and crc32c, for GCS) of what passes through. google-crc32c only takes
    immutable bytes, so it is fed 8 MB copies at a time (GCS destinations only)."""

    def __init__(self, crc: bool) -> None:
        import google_crc32c

        self.sha = hashlib.sha256()
        self.crc = google_crc32c.Checksum() if crc else None

    def update(self, view: memoryview) -> None:
        self.sha.update(view)
        if self.crc is not None:
            for i in range(0, view.nbytes, _CRC_CHUNK):
                self.crc.update(bytes(view[i:i + _CRC_CHUNK]))

    def result(self, size: int) -> Written:
        import base64

        crc = base64.b64encode(self.crc.digest()).decode() if self.crc is not None else ""
        return Written(size, self.sha.hexdigest(), crc)


class Chunk:
    """A piece of a tensor's bytes on its way to the file; ``release`` runs once the
    writer is done with it (returning a pooled buffer, unmapping base pages)."""

    __slots__ = ("data", "release")

    def __init__(self, data: memoryview, release: Callable[[], None] | None = None) -> None:
        self.data = data
        self.release = release


Produce = Callable[[OutTensor], Iterable[Chunk]]


def write_shard(path: Path, plan: ShardPlan, produce: Produce, crc: bool = False, *,
                spans: Spans | None = None, fsync: bool = True, direct: bool = True) -> Written:
    """Writes ``plan`` to ``path``; ``produce(t)`` yields each tensor's bytes, in the
    planned dtype and shape, as chunks (their total is checked against the plan: a
    mismatch is a bug upstream, refused loudly).

    Three threads overlap: the calling one produces (maps, merges), one copies each
    chunk into aligned blocks and hashes it there (``ShardFile``), one hands full blocks
    to the disk (hashlib, numpy copies, torch ops and file writes all release the GIL).
    A few chunks are queued at most, and the producer's buffer pool bounds the rest, so
    memory stays flat whatever the shard size. With ``fsync`` the file is on disk when
    this returns, so the manifest written after it never names data that a crash could
    lose (and the benchmark's ``cp && sync`` comparison is like for like)."""
    import queue
    import threading
    import time

    from tune2serve.components.export.publish.shard_file import ShardFile
    from tune2serve.components.export.timing import Spans as _Spans

    spans = spans or _Spans()
    hasher = _Hashing(crc)
    pending: queue.Queue[Chunk | None] = queue.Queue(maxsize=_DEPTH)
    failure: list[BaseException] = []
    out = ShardFile(path, hasher.update, spans, direct=direct)

    def consume() -> None:
        while True:
            t0 = time.perf_counter()
            item = pending.get()
            spans.add("write waits for chunks", time.perf_counter() - t0)
            if item is None:
                return
            try:
                if not failure:
                    out.write(item.data)
            except BaseException as e:  # reported to the producing thread below
                failure.append(e)
            finally:
                if item.release is not None:
                    item.release()

    writer = threading.Thread(target=consume, name="shard-write", daemon=True)
    writer.start()
    size = 0

    def put(chunk: Chunk) -> None:
        nonlocal size
        size += chunk.data.nbytes
        t0 = time.perf_counter()
        pending.put(chunk)
        spans.add("produce waits for the writer", time.perf_counter() - t0)

    try:
        put(Chunk(memoryview(shard_header(plan.tensors))))
        for t in plan.tensors:
            if failure:
                break
            got = 0
            for chunk in produce(t):
                got += chunk.data.nbytes
                put(chunk)
            if got != t.nbytes:
                raise CheckpointError(f"{plan.name}: tensor {t.name} came out as {got} bytes, planned {t.nbytes} "
                                      f"({list(t.shape)} {t.dtype})")
    finally:
        pending.put(None)
        writer.join()
        try:
            out.close(fsync=fsync and not failure)
        except BaseException as e:
            failure.append(e)
    if failure:
        raise failure[0]
    return hasher.result(size)


def write_small(path: Path, data: bytes, crc: bool = False) -> Written:
    hasher = _Hashing(crc)
    hasher.update(memoryview(data))
    path.write_bytes(data)
    return hasher.result(len(data))


def hash_file(path: Path, chunk: int = 16 << 20) -> Written:
    """sha256 + crc32c of an existing file (a staged file being considered for reuse)."""
    import base64

    import google_crc32c

    sha, crc, size = hashlib.sha256(), google_crc32c.Checksum(), 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
            crc.update(block)
            size += len(block)
    return Written(size, sha.hexdigest(), base64.b64encode(crc.digest()).decode())


INDEX_NAME = SAFETENSORS_INDEX
