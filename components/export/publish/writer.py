"""Writes safetensors shards one tensor at a time, hashing as it writes.

The shard plan is made before anything is written (every output tensor's name, dtype
and shape is known from the headers), so each shard's header is written first and the
tensors are then streamed into it as chunks as they are produced: memory holds a few
blocks, never a shard. sha256 and crc32c are computed on the way, over the bytes already
in hand (``shard_file``), so the manifest needs no second read.

Layout is the Hugging Face one: ``model-0000i-of-0000N.safetensors`` plus
``model.safetensors.index.json``, written even for a single shard so every export looks
the same.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tune2serve.components import ranges
from tune2serve.components.checkpoint.index import SAFETENSORS_INDEX
from tune2serve.components.errors import CheckpointError

if TYPE_CHECKING:
    from tune2serve.components.export.publish.shard_file import ShardFile
    from tune2serve.components.export.timing import Spans

_CRC_CHUNK = 8 << 20
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


class Crc32c:
    """crc32c (Castagnoli, as GCS keeps it) of the bytes passed to ``update``, over the
    very buffer, with the GIL released.

    Why not ``google_crc32c.Checksum`` alone: its C function takes only immutable
    ``bytes`` (a ``memoryview`` or ``mmap`` is refused) and releases the GIL only for
    those, so every buffer was first copied into a new ``bytes`` — a copy of every byte
    of the export, holding the GIL. The same Google C library ships inside the wheel
    (``google_crc32c.libs/libcrc32c*.so``); called through ctypes (which releases the
    GIL around foreign calls) on the buffer's address, it needs no copy. Where that
    library is not found (another build of the package), the copies are made as before."""

    _extend: Any = None
    _searched = False
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.value = 0
        self._fallback = None if self._library() is not None else _google_checksum()

    @classmethod
    def _library(cls) -> Any:
        with cls._lock:
            if not cls._searched:
                cls._searched = True
                cls._extend = _load_crc32c_extend()
            return cls._extend

    def update(self, view: memoryview) -> None:
        if self._fallback is not None:
            for i in range(0, view.nbytes, _CRC_CHUNK):
                self._fallback.update(bytes(view[i:i + _CRC_CHUNK]))
            return
        if not view.nbytes:
            return
        if view.readonly:  # bytes or a read-only map: no writable address to take, copied (small files)
            data = bytes(view)
            self.value = self._extend(self.value, data, len(data))
            return
        anchor = (ctypes.c_char * view.nbytes).from_buffer(view)
        try:
            self.value = self._extend(self.value, anchor, view.nbytes)
        finally:
            del anchor

    def digest(self) -> bytes:
        if self._fallback is not None:
            return bytes(self._fallback.digest())
        return self.value.to_bytes(4, "big")


def _google_checksum() -> Any:
    import google_crc32c

    return google_crc32c.Checksum()


def _load_crc32c_extend() -> Any:
    """``crc32c_extend(uint32_t crc, const uint8_t *data, size_t n)`` of the C library
    inside the google-crc32c wheel, or None (the caller falls back to the package)."""
    import glob

    try:
        import google_crc32c

        if getattr(google_crc32c, "implementation", "c") != "c":
            return None
        package = Path(google_crc32c.__file__).parent
        for path in sorted(glob.glob(str(package.parent / "google_crc32c.libs" / "libcrc32c*.so*"))
                           + glob.glob(str(package / "libcrc32c*.so*"))):
            extend = ctypes.CDLL(path).crc32c_extend
            extend.restype = ctypes.c_uint32
            extend.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
            if extend(0, b"123456789", 9) == 0xE3069283:  # the CRC-32C check value: it is the right function
                return extend
    except (ImportError, OSError, AttributeError):
        return None
    return None


class _Hashing:
    """sha256 (and crc32c, where the store keeps one) of what passes through, over the
    bytes in hand: both release the GIL, so the hashing thread runs beside the producer."""

    def __init__(self, crc: bool) -> None:
        self.sha = hashlib.sha256()
        self.crc = Crc32c() if crc else None

    def update(self, view: memoryview) -> None:
        self.sha.update(view)
        if self.crc is not None:
            self.crc.update(view)

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


Produce = Callable[[OutTensor, "ShardFile"], Iterable[Chunk]]


def write_shard(path: Path, plan: ShardPlan, produce: Produce, crc: bool = False, *,
                spans: Spans | None = None, fsync: bool = True, direct: bool = True) -> Written:
    """Writes ``plan`` to ``path``; ``produce(t, out)`` yields each tensor's bytes, in the
    planned dtype and shape, as chunks (their total is checked against the plan: a
    mismatch is a bug upstream, refused loudly) — either filled in place in the regions
    ``out.reserve`` lends (the base's bytes read into them, merged rows cast into them)
    or, for bytes already in hand, anywhere.

    The calling thread produces (reads, merges) straight into the file's aligned blocks;
    a hashing thread and a disk thread follow behind (``ShardFile``), so each byte is
    touched once by the CPU besides the hash, and memory stays flat whatever the shard
    size. With ``fsync`` the file is on disk when this returns, so the manifest written
    after it never names data that a crash could lose (and the benchmark's
    ``cp && sync`` comparison is like for like)."""
    from tune2serve.components.export.publish.shard_file import ShardFile
    from tune2serve.components.export.timing import Spans as _Spans

    spans = spans or _Spans()
    hasher = _Hashing(crc)
    out = ShardFile(path, hasher.update, spans, direct=direct)
    size = 0
    try:
        header = memoryview(shard_header(plan.tensors))
        out.write(header)
        size += header.nbytes
        for t in plan.tensors:
            got = 0
            for chunk in produce(t, out):
                try:
                    out.write(chunk.data)
                    got += chunk.data.nbytes
                finally:
                    if chunk.release is not None:
                        chunk.release()
            if got != t.nbytes:
                raise CheckpointError(f"{plan.name}: tensor {t.name} came out as {got} bytes, planned {t.nbytes} "
                                      f"({list(t.shape)} {t.dtype})")
            size += got
    except BaseException:
        try:
            out.close(fsync=False)
        except BaseException:  # the first failure is the one to report
            pass
        raise
    out.close(fsync=fsync)
    return hasher.result(size)


def write_small(path: Path, data: bytes, crc: bool = False) -> Written:
    hasher = _Hashing(crc)
    hasher.update(memoryview(data))
    path.write_bytes(data)
    return hasher.result(len(data))


def hash_file(path: Path, chunk: int = 16 << 20) -> Written:
    """sha256 + crc32c of an existing file (a staged file being considered for reuse),
    read into one reused buffer."""
    hasher, size, buf = _Hashing(crc=True), 0, bytearray(chunk)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            with memoryview(buf) as view, view[:n] as piece:
                hasher.update(piece)
            size += n
    return hasher.result(size)


INDEX_NAME = SAFETENSORS_INDEX
