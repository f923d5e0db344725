"""Source weights on GCS read in place, by ranged reads, instead of downloaded whole.

Why: downloading a gs:// base to local disk first made an export need local disk of the
model's size (and twice that with the output), far above a pipeline step's boot disk
for a 70 B model. Here each safetensors shard's header is read (one ranged read, the
same parser validate uses), and the export's tensor stream asks for the byte ranges it
is about to merge or copy (``mapped``): each is one ranged ``download_as_bytes`` of at
most one pooled chunk (16 MB), read ahead on a small thread pool so the network works
while the merge and the hash work. Nothing of the base touches local disk; memory holds
the ranges in flight (``AHEAD`` × chunk).

``.bin`` sources cannot be read by range (a pickle must be scanned whole, then loaded),
so they are still downloaded, file by file (``sources.open_weights``).
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tune2serve.components.checkpoint.safetensors_header import read_header
from tune2serve.components.checkpoint.storage import Folder
from tune2serve.components.checkpoint.tensor_reader import SafetensorsFile, TensorMeta, torch_dtype
from tune2serve.components.errors import CheckpointError

AHEAD = 4  # ranged reads in flight ahead of the stream, per file


class RemoteSafetensorsFile(SafetensorsFile):
    """A safetensors file of a remote folder, with ``SafetensorsFile``'s interface
    (``metas``, ``infos``, ``data_start``, ``read``, ``mapped``/``unmap``), so the tensor
    stream and the merge treat it exactly as a local one."""

    def __init__(self, folder: Folder, name: str, chunk: int = 16 << 20) -> None:  # noqa: D107 (no super(): no local file)
        header = read_header(folder, name)
        if header.problems:
            raise CheckpointError(f"{folder.join(name)}: corrupt safetensors file: {header.problems[0]}; "
                                  "re-save or re-upload this shard", file=name)
        self.folder, self.name, self.path = folder, name, None  # type: ignore[assignment]
        self.data_start = 8 + header.header_size
        self.infos = header.tensors
        self.metas = {t.name: TensorMeta(t.name, t.dtype, t.shape, name, t.begin) for t in header.tensors.values()}
        end = max((i.end for i in self.infos.values()), default=0)
        if header.file_size < self.data_start + end:
            raise CheckpointError(f"{folder.join(name)}: the file is truncated; re-save or re-upload this shard", file=name)
        self.chunk = chunk
        self._windows = -(-header.file_size // chunk)
        self._data_end = self.data_start + end
        self._pool: ThreadPoolExecutor | None = None
        self._reads: dict[int, Future[bytes]] = {}  # window index → its ranged read
        self._lock = threading.Lock()
        self._fh = self._map = self._bytes = None

    # -- ranged reads, read ahead ----------------------------------------------------
    def _window(self, k: int) -> Future[bytes]:
        """Window ``k`` of the file (bytes [k·chunk, (k+1)·chunk)), requested once."""
        future = self._reads.get(k)
        if future is None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=AHEAD, thread_name_prefix="ranged-read")
            future = self._pool.submit(self.folder.read_range, self.name, k * self.chunk, self.chunk)
            self._reads[k] = future
        return future

    def _range(self, pos: int, nbytes: int) -> memoryview:
        """Bytes [pos, pos+nbytes) of the file, from fixed windows of ``chunk`` bytes;
        the ``AHEAD`` windows after it are requested too, since the stream reads each file
        front to back, and windows behind it are dropped. One window: a view, no copy."""
        first, last = pos // self.chunk, (pos + nbytes - 1) // self.chunk
        with self._lock:
            for k in [k for k in self._reads if k < first]:
                self._reads.pop(k).cancel()
            futures = [self._window(k) for k in range(first, last + 1)]
            for k in range(last + 1, min(last + 1 + AHEAD, self._windows)):
                self._window(k)
        parts = [f.result() for f in futures]
        with self._lock:  # windows wholly behind this range are done; a file read to its end, all of them
            done = last + 1 if pos + nbytes >= self._data_end else last
            for k in [k for k in self._reads if k < done]:
                self._reads.pop(k).cancel()
        base = first * self.chunk
        data = memoryview(parts[0] if len(parts) == 1 else b"".join(parts))[pos - base:pos - base + nbytes]
        if data.nbytes != nbytes:
            raise CheckpointError(f"{self.folder.join(self.name)}: bytes {pos}..{pos + nbytes} came back as "
                                  f"{data.nbytes} bytes; the object is truncated or was replaced", file=self.name)
        return data

    def read(self, tensor: str) -> Any:
        import torch

        info = self.infos[tensor]
        out = torch.empty(info.shape, dtype=torch_dtype(info.dtype))
        if info.nbytes == 0:
            return out
        view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        pos, done = self.data_start + info.begin, 0
        while done < info.nbytes:  # chunk by chunk: the same ranges as ``mapped`` asks for
            n = min(self.chunk, info.nbytes - done)
            view[done:done + n] = self._range(pos + done, n)
            done += n
        return out

    def mapped(self, tensor: str, start: int, nbytes: int) -> tuple[memoryview, Any]:
        import torch

        info = self.infos[tensor]
        if start < 0 or nbytes < 0 or start + nbytes > info.nbytes:
            raise CheckpointError(f"{self.name}: bytes {start}..{start + nbytes} of {tensor!r} are outside the tensor")
        if nbytes == 0:
            return memoryview(b""), torch.empty(0, dtype=torch.uint8)
        view = self._range(self.data_start + info.begin + start, nbytes)
        with warnings.catch_warnings():  # read-only on purpose: the merge only reads the base
            warnings.simplefilter("ignore", UserWarning)
            return view, torch.frombuffer(view, dtype=torch.uint8)

    def unmap(self, tensor: str, start: int, nbytes: int) -> None:
        """Nothing to drop: the range was a buffer of its own, freed with its views."""

    def close(self) -> None:
        with self._lock:
            for future in self._reads.values():
                future.cancel()
            self._reads.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
