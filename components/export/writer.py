"""Writes safetensors shards one tensor at a time, hashing as it writes.

The shard plan is made before anything is written (every output tensor's name, dtype
and shape is known from the headers), so each shard's header is written first and the
tensors are then streamed into it as they are produced: memory holds the tensor being
written, never a shard, and no byte is copied twice (the tensor's own buffer goes to the
file). sha256 and crc32c are computed on the way, so the manifest needs no second read.

Layout is the Hugging Face one: ``model-0000i-of-0000N.safetensors`` plus
``model.safetensors.index.json``, written even for a single shard so every export looks
the same.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune2serve.components.checkpoint.index import SAFETENSORS_INDEX
from tune2serve.components.errors import CheckpointError, UsageError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_CRC_CHUNK = 8 << 20
_ELEMENT_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}


def parse_size(text: str | int) -> int:
    """``"5GB"`` → 5·10⁹ (decimal units, as transformers' ``max_shard_size``), ``"2GiB"``
    → 2·2³⁰, a bare number is bytes."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(str(text))
        unit = (match.group(2) or "").upper() if match else ""
        if not match or unit not in _UNITS:
            raise UsageError(f"--max-shard-size {text!r}: expected a size such as 5GB, 500MB or 100KB")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UsageError(f"--max-shard-size {text!r}: must be more than 0 bytes")
    return value


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
    """A binary file that computes sha256 (and crc32c, for GCS) of what passes through.
    google-crc32c only takes read-only bytes, so it is fed 8 MB copies at a time."""

    def __init__(self, path: Path, crc: bool) -> None:
        import google_crc32c

        self.fh = open(path, "wb")
        self.sha = hashlib.sha256()
        self.crc = google_crc32c.Checksum() if crc else None
        self.size = 0

    def write(self, data: Any) -> None:
        view = memoryview(data)
        self.sha.update(view)
        if self.crc is not None:
            for i in range(0, view.nbytes, _CRC_CHUNK):
                self.crc.update(bytes(view[i:i + _CRC_CHUNK]))
        self.fh.write(view)
        self.size += view.nbytes

    def close(self) -> Written:
        import base64

        self.fh.close()
        crc = base64.b64encode(self.crc.digest()).decode() if self.crc is not None else ""
        return Written(self.size, self.sha.hexdigest(), crc)


def write_shard(path: Path, plan: ShardPlan, produce: Callable[[OutTensor], Any], crc: bool = False) -> Written:
    """Writes ``plan`` to ``path``; ``produce`` returns each tensor, already in the
    planned dtype and shape (checked: a mismatch is a bug upstream, refused loudly).

    Hashing and writing run in a second thread (hashlib and file writes release the
    GIL), so the next tensor is merged while the last one goes to disk; the queue holds
    at most two tensors, which bounds memory."""
    import queue
    import threading

    import torch

    out = _Hashing(path, crc)
    pending: queue.Queue[Any] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    def drain() -> None:
        while (item := pending.get()) is not None:
            try:
                if not failure:
                    out.write(memoryview(item.reshape(-1).view(torch.uint8).numpy()))
            except BaseException as e:  # reported to the producing thread below
                failure.append(e)

    writer = threading.Thread(target=drain, name="shard-writer", daemon=True)
    writer.start()
    try:
        out.write(shard_header(plan.tensors))
        for t in plan.tensors:
            if failure:
                break
            tensor = produce(t)
            if tuple(tensor.shape) != t.shape or tensor.element_size() * tensor.numel() != t.nbytes:
                raise CheckpointError(f"{plan.name}: tensor {t.name} came out as {list(tensor.shape)} {tensor.dtype}, "
                                      f"planned {list(t.shape)} {t.dtype}")
            if t.nbytes:
                pending.put(tensor.contiguous())
            del tensor
    finally:
        pending.put(None)
        writer.join()
        written = out.close()
    if failure:
        raise failure[0]
    return written


def write_small(path: Path, data: bytes, crc: bool = False) -> Written:
    out = _Hashing(path, crc)
    out.write(data)
    return out.close()


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
