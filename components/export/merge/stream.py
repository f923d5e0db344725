"""Each output tensor as a stream of byte chunks for the shard writer.

Three ways, the cheapest that is exact:

* ``raw`` — a safetensors tensor the adapter does not touch, already in the output
  dtype (norms, embeddings, every tensor of a plain checkpoint export): its bytes go
  from a read-only memory map of the base file straight to the writer; no copy into a
  buffer, no dtype round trip, no torch.
* ``rows`` — a LoRA-merged safetensors tensor whose update can be applied row block by
  row block (``merge.row_blockable``; almost all of them): the mapped base rows are
  merged into a pooled buffer (``merge.RowMerger``) through one reused float32 scratch
  block, so no float32 copy of a big matrix is ever allocated.
* ``whole`` — everything else (``.bin`` sources, replaced ``modules_to_save`` tensors,
  per-column DoRA, dtype changes, unaligned tensors): the tensor is built whole by
  ``merge.merged`` and ``merge.cast`` as before.

Buffers are reused, never freshly allocated per tensor: a fresh multi-MB allocation is
fresh pages from the kernel, and those page faults were the export's largest single
cost before this module existed. Mapped base ranges are unmapped once written. The
pool's slots bound memory: ``count × size`` bytes in flight, whatever the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from tune2serve.components.checkpoint.tensor_reader import FLOAT_NAMES, CheckpointTensors, torch_dtype
from tune2serve.components.export.merge.finite import check_finite
from tune2serve.components.errors import CheckpointError
from tune2serve.components.export.merge.merge import AdapterPlan, RowMerger, cast, merged, row_blockable
from tune2serve.components.export.timing import Spans
from tune2serve.components.export.publish.writer import Chunk, OutTensor

CHUNK_BYTES = 16 << 20   # one pooled buffer
POOL_COUNT = 8           # buffers: 3 queued per consumer + the one being filled, + slack
BLOCK_ELEMENTS = 1 << 20  # rows merged together: a 4 MB float32 scratch, cache-sized
_ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


class BufferPool:
    """``count`` reusable buffers of ``size`` bytes; ``take`` blocks while all are in
    flight (a larger request gets a one-off buffer, still counted against ``count``)."""

    def __init__(self, count: int | None = None, size: int | None = None) -> None:
        self.size = size or CHUNK_BYTES
        self._slots = threading.Semaphore(count or POOL_COUNT)
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bytearray:
        self._slots.acquire()
        if nbytes > self.size:
            return bytearray(nbytes)
        with self._lock:
            return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        if len(buf) == self.size:
            with self._lock:
                self._free.append(buf)
        self._slots.release()

    def take_slot(self) -> None:
        """A place in flight without a buffer (for bytes that need none)."""
        self._slots.acquire()

    def give_slot(self) -> None:
        self._slots.release()


class TensorStream:
    """``stream(t)`` yields the chunks of output tensor ``t`` (see the module docstring);
    ``kinds`` counts the bytes that went each way, for the benchmark."""

    def __init__(self, tensors: CheckpointTensors, adapter: AdapterPlan | None, out_dtype: str,
                 spans: Spans | None = None, pool: BufferPool | None = None) -> None:
        self.tensors = tensors
        self.adapter = adapter
        self.out_dtype = out_dtype  # safetensors name of the float output dtype
        self.spans = spans or Spans()
        self.pool = pool or BufferPool()
        self.kinds: dict[str, int] = {"raw": 0, "rows": 0, "whole": 0, "experts": 0}
        self._scratch: Any = None

    def kind(self, t: OutTensor) -> str:
        if self.adapter is not None and self.adapter.experts is not None and t.name in self.adapter.experts:
            return "experts"  # shapes and float dtype checked by moe.plan_param_lora
        meta = self.tensors.metas.get(t.name)
        if meta is None or meta.dtype != t.dtype or tuple(meta.shape) != t.shape or self.tensors.safetensors_file(t.name) is None:
            return "whole"
        if self.adapter is None or not self.adapter.touches(t.name):
            return "raw"
        rows_merge = meta.dtype in FLOAT_NAMES and len(meta.shape) == 2 and row_blockable(self.adapter, t.name)
        # A tensor at an offset that is not a multiple of its element size cannot be viewed in place.
        aligned = self.tensors.file_offset(t.name) % _ELEMENT_BYTES.get(meta.dtype, 1) == 0
        return "rows" if rows_merge and aligned else "whole"

    def __call__(self, t: OutTensor) -> Iterator[Chunk]:
        kind = self.kind(t)
        self.kinds[kind] += t.nbytes
        if t.nbytes == 0:
            return iter(())
        return {"raw": self._raw, "rows": self._rows, "whole": self._whole, "experts": self._experts}[kind](t)

    def _take(self, nbytes: int) -> bytearray:
        t0 = time.perf_counter()
        buf = self.pool.take(nbytes)
        self.spans.add("produce waits for buffers", time.perf_counter() - t0)
        return buf

    def _chunk(self, buf: bytearray, nbytes: int) -> Chunk:
        return Chunk(memoryview(buf)[:nbytes], lambda: self.pool.give(buf))

    def _map(self, name: str, start: int, nbytes: int) -> tuple[memoryview, Any, Any]:
        """The base's bytes, mapped (no copy), and a release that unmaps them."""
        src = self.tensors.safetensors_file(name)
        assert src is not None
        t0, cpu = time.perf_counter(), time.thread_time()
        view, tensor = src.mapped(name, start, nbytes)
        self.spans.add("map base", time.perf_counter() - t0, time.thread_time() - cpu)

        def release() -> None:
            try:
                view.release()
            except BufferError:  # still exported by a consumer's leftover view: GC frees it
                pass
            src.unmap(name, start, nbytes)

        return view, tensor, release

    def _raw(self, t: OutTensor) -> Iterator[Chunk]:
        """Straight from the mapped base file to the hasher and the writer."""
        for start in range(0, t.nbytes, self.pool.size):
            n = min(self.pool.size, t.nbytes - start)
            t0 = time.perf_counter()
            self.pool.take_slot()  # no buffer needed, but the slot bounds what is in flight
            self.spans.add("produce waits for buffers", time.perf_counter() - t0)
            view, _, release = self._map(t.name, start, n)

            def done(release: Any = release) -> None:
                release()
                self.pool.give_slot()

            yield Chunk(view, done)

    def _rows(self, t: OutTensor) -> Iterator[Chunk]:
        """Merged from the mapped base rows into a pooled buffer, a block at a time."""
        import torch

        assert self.adapter is not None
        rows, cols = t.shape
        row_bytes = t.nbytes // rows
        per_chunk = max(1, self.pool.size // row_bytes)
        per_block = max(1, BLOCK_ELEMENTS // cols)
        if self._scratch is None or self._scratch.numel() < per_block * cols:
            self._scratch = torch.empty(per_block * cols, dtype=torch.float32)
        merger = RowMerger(self.adapter, t.name)
        dtype = torch_dtype(t.dtype)
        for row0 in range(0, rows, per_chunk):
            n = min(per_chunk, rows - row0)
            buf = self._take(n * row_bytes)
            _, raw, release = self._map(t.name, row0 * row_bytes, n * row_bytes)
            source = raw.view(dtype).view(n, cols)
            out = torch.frombuffer(buf, dtype=torch.uint8, count=n * row_bytes).view(dtype).view(n, cols)
            t0, cpu = time.perf_counter(), time.thread_time()
            for i in range(0, n, per_block):
                merger.apply(source[i:i + per_block], out[i:i + per_block], row0 + i, self._scratch, self.spans)
            self.spans.add("merge (all)", time.perf_counter() - t0, time.thread_time() - cpu)
            del source, raw
            release()
            yield self._chunk(buf, n * row_bytes)

    def _experts(self, t: OutTensor) -> Iterator[Chunk]:
        """An expert tensor of a parameter-level LoRA (``moe.py``): its update comes slab
        by slab (one expert each), each added to the same rows of the base (mapped, or
        read whole from a ``.bin``) in float32 and cast once, as ``merge.merged`` would."""
        import torch

        assert self.adapter is not None and self.adapter.experts is not None
        meta = self.tensors.metas[t.name]
        mapped = self.tensors.safetensors_file(t.name) is not None and \
            self.tensors.file_offset(t.name) % _ELEMENT_BYTES.get(meta.dtype, 1) == 0
        whole = None if mapped else self.tensors.read(t.name)
        row_bytes = meta.nbytes // meta.shape[0]
        row = 0
        for delta in self.adapter.experts.slabs(t.name):
            n = delta.shape[0]
            with self.spans.span("experts (read+merge+cast)"):
                if whole is None:
                    _, raw, release = self._map(t.name, row * row_bytes, n * row_bytes)
                    value = raw.view(torch_dtype(meta.dtype)).view(delta.shape).to(torch.float32, copy=True)
                    del raw
                    release()
                else:
                    value = whole[row:row + n].to(torch.float32, copy=True)
                value.add_(delta)  # the float32 sum, in place: no second slab-sized temporary
                del delta
                check_finite(value, t.name, (row, row + n), torch_dtype(self.out_dtype))  # before the cast
                value = cast(value, self.out_dtype)
            row += n
            yield Chunk(memoryview(value.reshape(-1).view(torch.uint8).numpy()))

    def _whole(self, t: OutTensor) -> Iterator[Chunk]:
        import torch

        with self.spans.span("whole tensors (read+merge+cast)"):
            base = self.tensors.read(t.name) if t.name in self.tensors.metas else None
            value = merged(self.adapter, t.name, base) if self.adapter is not None else base
            if self.adapter is not None or (value.is_floating_point() and value.dtype != torch_dtype(self.out_dtype)):
                # a merged, replaced or converted tensor: never ship NaN/Inf, nor a value the cast overflows
                check_finite(value, t.name, None, torch_dtype(self.out_dtype))
            value = cast(value, self.out_dtype)
        if tuple(value.shape) != t.shape or value.element_size() * value.numel() != t.nbytes:
            raise CheckpointError(f"tensor {t.name} came out as {list(value.shape)} {value.dtype}, planned {list(t.shape)} {t.dtype}")
        yield Chunk(memoryview(value.reshape(-1).view(torch.uint8).numpy()))
