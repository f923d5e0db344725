"""Lazy, per-tensor reads of the weights of a local checkpoint folder.

Why not ``safe_open`` and keep it open: a memory map whose pages stay mapped keeps every
page it has touched resident, so reading a 4 GB base through one would grow the process
to 4 GB. Two ways here instead, both holding only what is being worked on:
``read(tensor)`` is one positioned ``readinto`` straight into a tensor of its own size;
``read_into(tensor, start, out)`` (the export's streaming path) is a positioned read of
a range straight into the caller's buffer (the block of the output file it belongs in),
reading ahead so a cold cache does not stall on each small read — cheaper than touching
a memory map (measured: half the CPU, warm or cold: no page faults, nothing to unmap)
and needing no torch; ``mapped(tensor, start, n)`` / ``unmap`` give a range without any
copy and drop its pages from the process afterwards (they stay in the page cache).
Offsets come from the header parser every step shares. ``.bin`` files go through
``bin_loader`` (pickle scan, then ``torch.load(weights_only=True, mmap=True)``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune2serve.components.checkpoint.bin_loader import load_state_dict
from tune2serve.components.checkpoint.index import find_weight_files, parse_index
from tune2serve.components.checkpoint.safetensors_header import read_header
from tune2serve.components.checkpoint.storage import Folder, LocalFolder
from tune2serve.components.errors import CheckpointError

# safetensors dtype name ↔ torch dtype attribute name.
_DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
FLOAT_NAMES = {"F64", "F32", "F16", "BF16"}
_READ_AHEAD = 64 << 20  # bytes of a mapped file asked for ahead of use


def torch_dtype(st_dtype: str) -> Any:
    import torch

    try:
        return getattr(torch, _DTYPE_NAMES[st_dtype])
    except (KeyError, AttributeError) as e:
        raise CheckpointError(f"tensor dtype {st_dtype} is not supported by export") from e


def dtype_name(st_dtype: str) -> str:
    """``BF16`` → ``bfloat16`` (torch's and numpy's word for it), without importing torch."""
    return _DTYPE_NAMES.get(st_dtype, st_dtype)


def st_dtype(dtype: Any) -> str:
    """The safetensors name of a torch dtype (``torch.bfloat16`` → ``BF16``)."""
    name = str(dtype).removeprefix("torch.")
    for st, tname in _DTYPE_NAMES.items():
        if tname == name:
            return st
    raise CheckpointError(f"tensor dtype {name} cannot be written to safetensors by export")


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # safetensors name: BF16, F32, ...
    shape: tuple[int, ...]
    file: str
    offset: int = 0  # position in the file, for reading in file order

    @property
    def nbytes(self) -> int:
        n = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}.get(self.dtype, 1)
        for d in self.shape:
            n *= d
        return n


class SafetensorsFile:
    """One safetensors file whose header has been checked; tensors read one at a time."""

    def __init__(self, path: Path, name: str) -> None:
        header = read_header(LocalFolder(path.parent), path.name)
        if header.problems:
            raise CheckpointError(
                f"{name}: corrupt safetensors file: {header.problems[0]}; re-save or re-upload this shard", file=name
            )
        self.path, self.name = path, name
        self.data_start = 8 + header.header_size
        self.infos = header.tensors
        self.metas = {
            t.name: TensorMeta(t.name, t.dtype, t.shape, name, t.begin) for t in header.tensors.values()
        }
        self._fh: Any = None
        self._map: Any = None
        self._ahead = 0  # the file is being read ahead up to here (mapped)
        self._advised = 0  # the same for read_into
        self._size_checked = False
        self._opening = threading.Lock()  # the file and the map are opened once, by whichever thread reads first

    def read(self, tensor: str) -> Any:
        import torch

        info = self.infos[tensor]
        out = torch.empty(info.shape, dtype=torch_dtype(info.dtype))
        if info.nbytes == 0:
            return out
        view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        got = self._pread(view, self.data_start + info.begin)
        if got != info.nbytes:
            raise CheckpointError(f"{self.name}: tensor {tensor!r} is truncated ({got} of {info.nbytes} bytes)", file=self.name)
        return out

    def read_float32(self, tensor: str) -> Any:
        """A floating tensor as a float32 numpy array, without torch: what the LoRA
        merge needs of an adapter's matrices (widening is exact; a float64 tensor is
        rounded to nearest, as torch's ``.float()`` does)."""
        import numpy as np

        info = self.infos[tensor]
        raw = bytearray(info.nbytes)
        if self._pread(memoryview(raw), self.data_start + info.begin) != info.nbytes:
            raise CheckpointError(f"{self.name}: tensor {tensor!r} is truncated; re-save or re-upload it", file=self.name)
        if info.dtype == "BF16":
            widened = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return widened.view(np.float32).reshape(info.shape)
        if info.dtype not in ("F16", "F32", "F64"):
            raise CheckpointError(f"{self.name}: tensor {tensor!r} is {info.dtype}, not a floating dtype", file=self.name)
        return np.frombuffer(raw, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[info.dtype]).astype(
            np.float32).reshape(info.shape)

    def _pread(self, out: memoryview, pos: int) -> int:
        """Bytes at ``pos`` into ``out`` until it is full or the file ends; the count.
        Positioned reads, no shared file offset: the export's shard writers read one
        file from several threads."""
        import os

        fd = self._file().fileno()
        done = 0
        while done < out.nbytes:
            got = os.preadv(fd, [out[done:]], pos + done)
            if got <= 0:
                break
            done += got
        return done

    def _file(self) -> Any:
        with self._opening:
            if self._fh is None:
                self._fh = open(self.path, "rb", buffering=0)
            return self._fh

    def read_into(self, tensor: str, start: int, out: memoryview) -> None:
        """Bytes ``start``…``start+len(out)`` of ``tensor``, read straight into ``out``
        (one positioned read; the file is read ahead of it, asynchronously)."""
        import os

        info = self.infos[tensor]
        nbytes = out.nbytes
        if start < 0 or start + nbytes > info.nbytes:
            raise CheckpointError(f"{self.name}: bytes {start}..{start + nbytes} of {tensor!r} are outside the tensor")
        fh = self._file()
        if not self._size_checked:
            if os.fstat(fh.fileno()).st_size < self.data_start + max((i.end for i in self.infos.values()), default=0):
                raise CheckpointError(f"{self.name}: the file is truncated; re-save or re-upload this shard", file=self.name)
            self._size_checked = True
        pos = self.data_start + info.begin + start
        self._advise(pos, pos + nbytes + _READ_AHEAD)
        if self._pread(out, pos) != nbytes:
            raise CheckpointError(f"{self.name}: tensor {tensor!r} is truncated; re-save or re-upload this shard",
                                  file=self.name)

    def _advise(self, start: int, end: int) -> None:
        """``read_into``'s read-ahead: asks the kernel for [start, end) now (in large
        steps, past what was already asked), so the disk works ahead of the reads."""
        import os

        start = max(start, self._advised)
        if end - start < _READ_AHEAD // 4 and start > 0:
            return
        if hasattr(os, "posix_fadvise") and end > start:
            os.posix_fadvise(self._fh.fileno(), start, end - start, os.POSIX_FADV_WILLNEED)
        self._advised = end

    def mapped(self, tensor: str, start: int, nbytes: int) -> memoryview:
        """Bytes ``start``…``start+nbytes`` of ``tensor`` straight from the page cache
        (a read-only memory map of the file: no copy). Call ``unmap(tensor, start, nbytes)`` when done with them: that
        drops the pages from this process (they stay cached), so resident memory holds
        only the ranges in flight, never the file — the reason ``safe_open`` is not used."""
        info = self.infos[tensor]
        if start < 0 or nbytes < 0 or start + nbytes > info.nbytes:
            raise CheckpointError(f"{self.name}: bytes {start}..{start + nbytes} of {tensor!r} are outside the tensor")
        with self._opening:
            if self._map is None:
                self._open_map()
        pos = self.data_start + info.begin + start
        self._read_ahead(pos, pos + nbytes + _READ_AHEAD)
        return memoryview(self._map)[pos:pos + nbytes]

    def _open_map(self) -> None:
        import mmap

        with open(self.path, "rb") as fh:
            whole = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if len(whole) < self.data_start + max((i.end for i in self.infos.values()), default=0):
            whole.close()
            raise CheckpointError(f"{self.name}: the file is truncated; re-save or re-upload this shard", file=self.name)
        whole.madvise(mmap.MADV_SEQUENTIAL)
        self._map = whole

    def _read_ahead(self, start: int, end: int) -> None:
        """Asks the kernel to read [start, end) into the cache now (asynchronously), past
        what was already asked: with a cold cache, the disk then works ahead of the merge
        instead of each page fault waiting for a small read of its own."""
        import mmap

        start, end = max(start, self._ahead), min(end, len(self._map))
        if end - start < _READ_AHEAD // 4 and end < len(self._map) and start > 0:
            return  # ask in large steps
        page = start - start % mmap.PAGESIZE
        if end > page:
            self._map.madvise(mmap.MADV_WILLNEED, page, end - page)
            self._ahead = end

    def unmap(self, tensor: str, start: int, nbytes: int) -> None:
        import mmap

        pos = self.data_start + self.infos[tensor].begin + start
        page = pos - pos % mmap.PAGESIZE
        if self._map is not None and nbytes:
            self._map.madvise(mmap.MADV_DONTNEED, page, pos + nbytes - page)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still alive somewhere; the map goes with it
                pass
            self._map = None


class BinFile:
    """One ``.bin`` state dict, scanned then memory-mapped by ``torch.load``."""

    def __init__(self, path: Path, name: str) -> None:
        self.name = name
        self.state = load_state_dict(path, name)
        self.metas = {
            k: TensorMeta(k, st_dtype(v.dtype), tuple(v.shape), name, i) for i, (k, v) in enumerate(self.state.items())
        }

    def read(self, tensor: str) -> Any:
        return self.state[tensor].contiguous()

    def close(self) -> None:
        self.state = {}


class CheckpointTensors:
    """Every tensor of a local checkpoint folder (single file, sharded with an index, or
    ``.bin``), by name. ``metas`` is known up front; ``read`` loads one tensor."""

    def __init__(self, files: dict[str, SafetensorsFile | BinFile], owner: dict[str, str]) -> None:
        self.files = files
        self.owner = owner
        self.metas = {t: files[f].metas[t] for t, f in owner.items()}

    @classmethod
    def open(cls, root: Path, label: str | None = None) -> CheckpointTensors:
        """Opens the weights at the top of ``root``; safetensors win over ``.bin``."""
        return cls.from_folder(
            LocalFolder(root), label or str(root),
            lambda name: SafetensorsFile(root / name, name) if name.endswith(".safetensors") else BinFile(root / name, name),
        )

    @classmethod
    def from_folder(cls, folder: Folder, label: str, open_file: Callable[[str], SafetensorsFile | BinFile]) -> CheckpointTensors:
        """The weights at the top of ``folder``, each file opened by ``open_file(name)``
        (local files, or ranged reads of remote ones: ``export.remote``)."""
        found = find_weight_files(folder.list())
        files: dict[str, SafetensorsFile | BinFile] = {}
        owner: dict[str, str] = {}
        index_name = found.safetensors_index if found.safetensors else found.bin_index
        names = found.safetensors or found.bins
        if not names:
            raise CheckpointError(f"{label}: no weight files (*.safetensors or *.bin) at the top of the folder", file=None)
        for name in names:
            folder.size(name)  # refuses a FIFO, device or symlink loop by name before anything opens it
        if index_name:
            index = parse_index(folder, index_name)
            missing = [s for s in index.shards if s not in names]
            if missing:
                raise CheckpointError(
                    f"{label}/{index_name}: names shard {missing[0]} which is not in the folder; upload it or fix the index",
                    file=index_name,
                )
            names = index.shards
        for name in names:
            files[name] = open_file(name)
            for tensor in files[name].metas:
                if tensor in owner:  # loaders disagree on which copy wins: refuse, as validate does
                    raise CheckpointError(
                        f"{label}: tensor {tensor!r} is in both {owner[tensor]} and {name}; a checkpoint holds each "
                        "tensor once. Re-save it", file=name)
                owner[tensor] = name
        if index_name:
            for tensor, shard in index.weight_map.items():
                if tensor not in files[shard].metas:
                    raise CheckpointError(
                        f"{label}/{index_name}: maps {tensor!r} to {shard}, which does not hold it; the shard is corrupt or the index stale",
                        file=index_name,
                    )
                owner[tensor] = shard
        return cls(files, owner)

    def read(self, tensor: str) -> Any:
        return self.files[self.owner[tensor]].read(tensor)

    def file_offset(self, tensor: str) -> int:
        """Where ``tensor``'s bytes start in its safetensors file (-1 for ``.bin``)."""
        f = self.safetensors_file(tensor)
        return f.data_start + f.infos[tensor].begin if f is not None else -1

    def safetensors_file(self, tensor: str) -> SafetensorsFile | None:
        """The safetensors file holding ``tensor`` (for raw byte reads), None for ``.bin``."""
        f = self.files[self.owner[tensor]]
        return f if isinstance(f, SafetensorsFile) else None

    def close(self) -> None:
        for f in self.files.values():
            f.close()
