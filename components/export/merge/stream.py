"""Each output tensor as a stream of byte chunks for the shard writer.

Three ways, the cheapest that is exact:

* ``raw`` — a safetensors tensor the adapter does not touch, already in the output
  dtype (norms, embeddings, every tensor of a plain checkpoint export): its bytes are
  read (``read_into``: one positioned read) straight into the output file's block where
  they belong (``ShardFile.reserve``); no other copy, no dtype round trip, no torch.
* ``rows`` — a LoRA-merged float32/bfloat16/float16 safetensors tensor whose update can
  be applied row block by row block (``merge.row_blockable``; almost all of them): a
  block of base rows, mapped (read-only, no copy; unmapped once merged), is merged by the
  fused kernel (``merge.RowMerger``, ``lora_rows.c``: convert, rank-r update, finiteness
  check and rounding in one pass, no torch) straight into the output file's block, so no
  float32 copy of a big matrix is ever allocated and the merged bytes are never copied
  again. A row that straddles two blocks of the file is merged alone and copied (one
  row per 8 MB block).
* ``whole`` — everything else (``.bin`` sources, replaced ``modules_to_save`` tensors,
  per-column DoRA, dtype changes, unaligned tensors): the tensor is built whole by
  ``merge.merged`` and ``merge.cast`` as before, and copied into the file.

Buffers are reused, never freshly allocated per tensor: a fresh multi-MB allocation is
fresh pages from the kernel, and those page faults were the export's largest single
cost before this module existed. The output file's blocks bound memory: ``BLOCKS`` ×
``BLOCK`` bytes in flight (``shard_file``), whatever the model; ``BufferPool`` is kept
for the ranged reads of a remote base (``source/remote.py``).
"""

from __future__ import annotations

import copy
import sys
import threading
import time
import warnings
from concurrent.futures import CancelledError
from collections.abc import Iterator
from typing import Any

from tune2serve.components.checkpoint.tensor_reader import CheckpointTensors, torch_dtype
from tune2serve.components.export.merge.finite import check_finite
from tune2serve.components.errors import CheckpointError
from tune2serve.components.export.merge.merge import AdapterPlan, RowMerger, cast, merged, row_blockable
from tune2serve.components.export.timing import Spans
from tune2serve.components.export.publish import shard_file
from tune2serve.components.export.publish.shard_file import ShardFile
from tune2serve.components.export.publish.writer import Chunk, OutTensor

CHUNK_BYTES = 16 << 20   # the most bytes asked for at once (one read; one pooled buffer)
POOL_COUNT = 8           # pooled buffers (the remote reads' pool counts its own)
BLOCK_ELEMENTS = 1 << 20  # rows merged together by one kernel call (a few MB: in cache between base and file)
_ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


def row_blocks(position: int, rows: int, row_bytes: int, per_chunk: int, element: int,
               block: int) -> list[tuple[int, int, bool]]:
    """(first row, rows, in place) of each merge block of a 2-D tensor whose bytes start at
    byte ``position`` of the output file: as many whole rows as fit before the file's next
    ``block`` boundary (at most ``per_chunk``), merged in place there; a row across the
    boundary, or rows at an address not aligned for the dtype, merged apart and copied.
    A function of where the tensor starts in the file alone, so it is tested on its own."""
    out: list[tuple[int, int, bool]] = []
    row, pos = 0, position
    while row < rows:
        n = min(per_chunk, rows - row, (block - pos % block) // row_bytes)
        in_place = n > 0 and pos % element == 0
        n = max(n, 1)
        out.append((row, n, in_place))
        row, pos = row + n, pos + n * row_bytes
    return out


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



def import_torch_in_background(spans: Spans | None = None) -> None:
    """Starts ``import torch`` on a thread of its own, for an export that will merge.

    The import costs ~2-3 s of one core here (bench/bench_export.py), as much as writing
    a GB; done when the first merged tensor needs it, the export stands still meanwhile.
    Started as soon as the source is known to be an adapter, it runs while the export
    lists and plans, claims DEST and copies the tensors before the first merged one —
    work that waits on the disk and releases the GIL. The merge's own ``import torch``
    then just waits for the module (Python's import lock makes a second importer wait
    for the first, it never imports twice). A failed import here is left for that
    ``import`` to raise where it is handled; the thread is a daemon, so an export that
    fails before it merges does not wait for it. ``spans`` gets the import's own time
    (what the export waited for of it is timed where it waits)."""

    def run() -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            import torch  # noqa: F401
        except Exception:  # the merge's own import raises it, in the export's context
            pass
        if spans is not None:
            spans.add("torch import (its own thread)", time.perf_counter() - start, time.thread_time() - cpu)

    if "torch" not in sys.modules:
        threading.Thread(target=run, name="import-torch", daemon=True).start()


class _TorchThreads:
    """torch's intra-op thread count set to one for the merge, and given back once,
    whichever of an export's shard writers merged first (the count is per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._saved: int | None = None

    def one(self) -> None:
        import torch

        with self._lock:
            if self._saved is None:
                self._saved = torch.get_num_threads()
                torch.set_num_threads(1)

    def restore(self) -> None:
        with self._lock:
            if self._saved is not None:
                import torch

                torch.set_num_threads(self._saved)
                self._saved = None


class TensorStream:
    """``stream(t)`` yields the chunks of output tensor ``t`` (see the module docstring);
    ``kinds`` counts the bytes that went each way, for the benchmark."""

    def __init__(self, tensors: CheckpointTensors, adapter: AdapterPlan | None, out_dtype: str,
                 spans: Spans | None = None) -> None:
        self.tensors = tensors
        self.adapter = adapter
        self.out_dtype = out_dtype  # safetensors name of the float output dtype
        self.spans = spans or Spans()
        self.kinds: dict[str, int] = {"raw": 0, "rows": 0, "whole": 0, "experts": 0}
        self.stop = threading.Event()  # set: every stream of this export stops at its next chunk
        self._merging = False  # this stream has merged (its wait for torch's import is timed)
        self._torch_threads = _TorchThreads()  # shared with the forks
        self._forks: list[TensorStream] = []

    def fork(self) -> TensorStream:
        """A stream over the same tensors for another shard-writer thread: its own byte
        counts (``close`` adds them up), the same stop signal and torch setting. The tensors' reads are positioned (``SafetensorsFile``), so threads share them."""
        other = copy.copy(self)
        other.kinds = dict.fromkeys(self.kinds, 0)
        other._merging, other._forks = False, []
        self._forks.append(other)
        return other

    def kind(self, t: OutTensor) -> str:
        if self.adapter is not None and self.adapter.experts is not None and t.name in self.adapter.experts:
            return "experts"  # shapes and float dtype checked by moe.plan_param_lora
        meta = self.tensors.metas.get(t.name)
        if meta is None or meta.dtype != t.dtype or tuple(meta.shape) != t.shape or self.tensors.safetensors_file(t.name) is None:
            return "whole"
        if self.adapter is None or not self.adapter.touches(t.name):
            return "raw"
        rows_merge = meta.dtype in RowMerger.KINDS and len(meta.shape) == 2 and row_blockable(self.adapter, t.name)
        # A tensor at an offset that is not a multiple of its element size cannot be viewed in place.
        aligned = self.tensors.file_offset(t.name) % _ELEMENT_BYTES.get(meta.dtype, 1) == 0
        return "rows" if rows_merge and aligned else "whole"

    def needs_torch(self, t: OutTensor) -> bool:
        """True when ``t`` is built with torch: a whole tensor (a dtype change, a saved
        module, a ``.bin`` base) or a fused-expert update; raw copies and row merges are not."""
        return t.nbytes > 0 and self.kind(t) in ("whole", "experts")

    def __call__(self, t: OutTensor, out: ShardFile) -> Iterator[Chunk]:
        """The chunks of ``t``, in order; ``raw`` and ``rows`` fill ``out``'s blocks in
        place (each chunk is the region it lent), the others are copied in."""
        kind = self.kind(t)
        self.kinds[kind] += t.nbytes
        if t.nbytes == 0:
            return iter(())
        if kind == "raw":
            return self._until_stopped(self._raw(t, out))
        if kind == "rows":
            return self._until_stopped(self._rows(t, out))
        return self._until_stopped({"whole": self._whole, "experts": self._experts}[kind](t))

    def _until_stopped(self, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        """``chunks``, until another writer of the export failed (``stop``): then this
        shard stops too, at its next chunk, instead of being finished for nothing."""
        for chunk in chunks:
            if self.stop.is_set():
                raise CancelledError("another shard writer of this export failed")
            yield chunk

    def close(self) -> None:
        """Adds the forks' byte counts to this stream's, and gives torch back the thread
        count it had before the first merge."""
        for other in self._forks:
            for kind, n in other.kinds.items():
                self.kinds[kind] += n
        self._forks = []
        self._torch_threads.restore()

    def _torch(self) -> Any:
        """torch, imported on the first tensor that needs it (a plain copy never does),
        on one thread: the merge's GEMMs are rank-r and block-sized, one thread does them
        at full speed, while more only spin against the hash and disk threads for the
        same cores (measured: 2 OpenMP threads on a busy 2-core machine made the merge
        3-12x slower). A merge started ``import_torch_in_background`` early; the wait for
        what is left of that import is timed."""
        if not self._merging:
            t0 = time.perf_counter()
            import torch

            self.spans.add("torch import (what the merge waited for)", time.perf_counter() - t0, 0.0)
            self._torch_threads.one()
            self._merging = True
        import torch

        return torch

    def _read(self, name: str, start: int, out: memoryview) -> None:
        """The base's bytes ``start``… of tensor ``name`` into ``out`` (one read)."""
        src = self.tensors.safetensors_file(name)
        assert src is not None
        t0, cpu = time.perf_counter(), time.thread_time()
        src.read_into(name, start, out)
        self.spans.add("read (base bytes)", time.perf_counter() - t0, time.thread_time() - cpu)

    def _map(self, name: str, start: int, nbytes: int) -> tuple[memoryview, Any]:
        """The base's bytes, mapped (no copy), and a release that unmaps them."""
        src = self.tensors.safetensors_file(name)
        assert src is not None
        t0, cpu = time.perf_counter(), time.thread_time()
        view = src.mapped(name, start, nbytes)
        self.spans.add("map base", time.perf_counter() - t0, time.thread_time() - cpu)

        def release() -> None:
            try:
                view.release()
            except BufferError:  # still exported by a consumer's leftover view: GC frees it
                pass
            src.unmap(name, start, nbytes)

        return view, release

    def _raw(self, t: OutTensor, out: ShardFile) -> Iterator[Chunk]:
        """Read straight from the base file into the output file's blocks."""
        pos = 0
        while pos < t.nbytes:
            region = out.reserve(min(CHUNK_BYTES, t.nbytes - pos))
            self._read(t.name, pos, region)
            pos += region.nbytes
            yield Chunk(region)

    def _rows(self, t: OutTensor, out: ShardFile) -> Iterator[Chunk]:
        """Merged a block of rows at a time by the fused kernel (``merge.RowMerger``),
        from the mapped base rows (no copy: the kernel reads the page cache) straight into
        the output file's blocks; no torch. Why mapped here and read for ``raw``: the
        merge reads each base byte once anyway; a read into a buffer first adds a copy
        (measured on the 3.35 GB fixture, warm: +0.2-0.3 CPU s with the read on a thread
        of its own)."""
        assert self.adapter is not None
        rows, cols = t.shape
        row_bytes = t.nbytes // rows
        per_chunk = max(1, min(CHUNK_BYTES // row_bytes, BLOCK_ELEMENTS // cols))
        merger = RowMerger(self.adapter, t.name, t.dtype)
        per_map = max(1, CHUNK_BYTES // row_bytes)  # rows mapped at once: unmapping is a TLB flush on every core
        mapped, first, count, release = None, 0, 0, None
        try:
            for row, n, in_place in row_blocks(out.appended, rows, row_bytes, per_chunk, _ELEMENT_BYTES.get(t.dtype, 1),
                                               shard_file.BLOCK):
                if mapped is None or row + n > first + count:
                    if release is not None:
                        mapped = None
                        release()
                    first, count = row, min(rows - row, max(per_map, n))
                    mapped, release = self._map(t.name, row * row_bytes, count * row_bytes)
                target = out.reserve(n * row_bytes)[:n * row_bytes] if in_place else memoryview(bytearray(n * row_bytes))
                t0, cpu = time.perf_counter(), time.thread_time()
                merger.apply(mapped[(row - first) * row_bytes:(row - first + n) * row_bytes], target, row, n, self.spans)
                self.spans.add("merge (all)", time.perf_counter() - t0, time.thread_time() - cpu)
                yield Chunk(target)
        finally:
            mapped = None
            if release is not None:
                release()

    def _experts(self, t: OutTensor) -> Iterator[Chunk]:
        """An expert tensor of a parameter-level LoRA (``moe.py``): its update comes slab
        by slab (one expert each), each added to the same rows of the base (mapped, or
        read whole from a ``.bin``) in float32 and cast once, as ``merge.merged`` would."""
        torch = self._torch()

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
                    view, release = self._map(t.name, row * row_bytes, n * row_bytes)
                    with warnings.catch_warnings():  # read-only on purpose: the merge only reads the base
                        warnings.simplefilter("ignore", UserWarning)
                        raw = torch.frombuffer(view, dtype=torch.uint8)
                    value = raw.view(torch_dtype(meta.dtype)).view(delta.shape).to(torch.float32, copy=True)
                    del raw, view
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
        torch = self._torch()

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
