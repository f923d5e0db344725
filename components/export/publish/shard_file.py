"""A new file written front to back around the page cache, hashed on the way, each byte
touched once by the CPU on its way from the base to the disk.

Why not plain ``write()``: writing through the page cache cost ~2 s of CPU per GB on
the shared 2-core machine the benchmark runs on (page allocation, then writeback) —
more than the merge and the hash together. With ``O_DIRECT`` the disk reads the data
straight from our memory; the price is alignment: the file is assembled in page-aligned
blocks of ``BLOCK`` bytes, block k holding the file's bytes [k·BLOCK, (k+1)·BLOCK).

So that this costs no copy, the producer fills the blocks in place: ``reserve(n)`` lends
the next free bytes of the current block, the producer reads the base's bytes into them
(``pread``) or casts merged rows into them, then hands them back with ``write(region)``;
only bytes already in hand elsewhere (the header, a tensor built whole) are copied in,
``PIECE`` at a time. Every ``PIECE`` of filled bytes goes to a hashing thread while it is
still in the CPU cache, and each full block, once hashed, to a disk thread: the
producer's next block, the hash of this one and the disk write of the last overlap on
different cores (``pread``, hashlib, the crc32c library, ``os.write`` and the merge's
torch kernels all release the GIL). ``BLOCKS`` blocks bound the memory in flight.

The unaligned tail is written through the cache, and ``fsync`` makes everything durable.
Where ``O_DIRECT`` is refused (tmpfs, some network filesystems, at open or at the first
write) the blocks are written through the cache, and ``posix_fadvise(DONTNEED)`` starts
writeback as it goes so that the final ``fsync`` has little left to wait for. A scratch
shard about to be uploaded (gs:// DEST) is written ``O_DIRECT`` too: written through the
cache and left there for the upload to read, it cost more client CPU than this and the
upload's read from disk (measured: 8.3-8.4 vs 6.9-8.0 CPU s for a 0.44 GB gs:// export).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BLOCK = 8 << 20       # bytes per direct write: this disk's sequential rate is reached at 8 MB
PIECE = 1 << 20       # hashed at once, right after it was filled: still in the L2/L3 cache
BLOCKS = 4            # one being filled, one being hashed, up to two with the disk


def buffer_address(view: memoryview) -> int:
    """Where a writable buffer's first byte is in memory (for alignment and in-place checks)."""
    anchor = ctypes.c_char.from_buffer(view)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


class ShardFile:
    """``reserve(n)`` lends the next bytes of the file to fill in place, ``write(view)``
    appends ``view`` (copying it, unless it is the region just reserved), calling
    ``on_piece`` with each piece of the file in order on the hashing thread;
    ``close(fsync)`` finishes. Not thread-safe: one producer thread."""

    def __init__(self, path: Path, on_piece: Callable[[memoryview], None], spans: Any, direct: bool = True) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.on_piece = on_piece
        self.spans = spans
        self.fd = -1
        self.direct = False
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self.fd = os.open(path, flags | os.O_DIRECT, 0o644)
                self.direct = True
            except OSError:
                self.fd = -1
        if self.fd < 0:
            self.fd = os.open(path, flags, 0o644)
        self.offset = 0  # bytes handed to the disk so far
        self.appended = 0  # bytes appended so far: where the next write lands in the file
        self.failure: list[BaseException] = []
        self._blocks = [mmap.mmap(-1, BLOCK) for _ in range(BLOCKS)]  # anonymous maps are page-aligned
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for block in self._blocks:
            self._free.put(block)
        self._hashing: queue.Queue[tuple[mmap.mmap, int, int] | None] = queue.Queue()
        self._disk: queue.Queue[mmap.mmap | None] = queue.Queue()
        self._block: mmap.mmap | None = None
        self._base = 0     # the current block's address
        self._fill = 0     # bytes of the current block filled
        self._queued = 0   # bytes of the current block handed to the hashing thread
        self._lent = 0     # bytes of the current block lent by reserve() at _fill
        self._threads = [threading.Thread(target=self._hash_loop, name="shard-hash", daemon=True),
                         threading.Thread(target=self._disk_loop, name="shard-disk", daemon=True)]
        for thread in self._threads:
            thread.start()

    # -- the producer ------------------------------------------------------------------
    def reserve(self, nbytes: int) -> memoryview:
        """The next ``min(nbytes, what is left of the block)`` bytes of the file, to be
        filled in place and then passed (or a prefix of them) to ``write``."""
        self._check()
        if self._block is None:
            self._next_block()
        self._lent = min(nbytes, BLOCK - self._fill)
        return memoryview(self._block)[self._fill:self._fill + self._lent]  # type: ignore[index]

    def write(self, view: memoryview) -> None:
        """Appends ``view``: the region ``reserve`` lent (or its start), filled in place,
        costs nothing more; any other bytes are copied into the blocks."""
        self._check()
        if view.nbytes and self._block is not None and view.obj is self._block:
            if view.nbytes > self._lent or buffer_address(view) != self._base + self._fill:
                raise ValueError("write() of block bytes other than the region reserve() lent")
            self._lent = 0
            self._advance(view.nbytes)
            return
        self._lent = 0
        self._copy(view)

    def close(self, fsync: bool) -> None:
        """Writes what is left (the unaligned tail through the cache), then with
        ``fsync`` makes the file durable; always closes it."""
        try:
            tail = self._block, self._fill
            if self._block is not None and self._fill > self._queued:
                self._hashing.put((self._block, self._queued, self._fill))
            self._block = None
            self._stop()
            if self.failure:
                raise self.failure[0]
            block, fill = tail
            if block is not None and fill:
                self._buffered()
                self._write_through(memoryview(block)[:fill])
            if fsync:
                with self.spans.span("fsync (+ tail)"):
                    os.fsync(self.fd)
        finally:
            self._stop()
            os.close(self.fd)
            self.fd = -1
            for block in self._blocks:
                try:
                    block.close()
                except BufferError:  # a view of it is still alive somewhere: the map goes with it
                    pass

    def _check(self) -> None:
        if self.failure:
            raise self.failure[0]

    def _next_block(self) -> None:
        t0 = time.perf_counter()
        self._block = self._free.get()
        self.spans.add("produce waits for a free block", time.perf_counter() - t0)
        self._base = buffer_address(memoryview(self._block))
        self._fill = self._queued = 0

    def _copy(self, view: memoryview) -> None:
        """Bytes in hand copied into the blocks, ``PIECE`` at a time (numpy's copy
        releases the GIL), each piece hashed as soon as it is in."""
        import numpy as np

        data = np.frombuffer(view, dtype=np.uint8)
        while data.size:
            if self._block is None:
                self._next_block()
            n = min(PIECE, BLOCK - self._fill, data.size)
            t0, cpu = time.perf_counter(), time.thread_time()
            np.frombuffer(self._block, dtype=np.uint8, count=n, offset=self._fill)[:] = data[:n]
            self.spans.add("copy (bytes in hand) into blocks", time.perf_counter() - t0, time.thread_time() - cpu)
            self._advance(n)
            data = data[n:]

    def _advance(self, n: int) -> None:
        """``n`` more bytes of the current block are filled: every ``PIECE`` of them, and
        the block's end, go to the hashing thread."""
        assert self._block is not None
        self._fill += n
        self.appended += n
        if self._fill - self._queued >= PIECE or self._fill == BLOCK:
            self._hashing.put((self._block, self._queued, self._fill))
            self._queued = self._fill
        if self._fill == BLOCK:
            self._block = None

    def _stop(self) -> None:
        """Ends both threads once they have done what was queued (idempotent)."""
        if self._threads:
            self._hashing.put(None)
            for thread in self._threads:
                thread.join()
            self._threads = []

    # -- the hashing thread --------------------------------------------------------------
    def _hash_loop(self) -> None:
        try:
            while True:
                t0 = time.perf_counter()
                item = self._hashing.get()
                self.spans.add("hash waits for bytes", time.perf_counter() - t0)
                if item is None:
                    return
                block, start, end = item
                if not self.failure:
                    t0, cpu = time.perf_counter(), time.thread_time()
                    try:
                        with memoryview(block) as whole, whole[start:end] as piece:
                            self.on_piece(piece)
                    except BaseException as e:  # reported by the next reserve/write or by close()
                        self.failure.append(e)
                    self.spans.add("hash", time.perf_counter() - t0, time.thread_time() - cpu)
                if end == BLOCK:
                    self._disk.put(block)
        finally:
            self._disk.put(None)

    # -- the disk thread -------------------------------------------------------------
    def _disk_loop(self) -> None:
        while (block := self._disk.get()) is not None:
            t0, cpu = time.perf_counter(), time.thread_time()
            try:
                if not self.failure:
                    with memoryview(block) as view:
                        self._write_block(view)
            except BaseException as e:  # reported by the next reserve/write or by close()
                self.failure.append(e)
            finally:
                self._free.put(block)
            self.spans.add("disk write", time.perf_counter() - t0, time.thread_time() - cpu)

    def _write_block(self, view: memoryview) -> None:
        if not self.direct:
            self._write_through(view)
            return
        try:
            while view.nbytes:
                n = os.write(self.fd, view)
                view, self.offset = view[n:], self.offset + n
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self._buffered()  # the filesystem refused the direct write after all
            self._write_through(view)

    # -- through the page cache --------------------------------------------------------
    def _buffered(self) -> None:
        import fcntl

        if self.direct:
            fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            self.direct = False

    def _write_through(self, view: memoryview) -> None:
        start = self.offset
        while view.nbytes:
            n = os.write(self.fd, view)
            view, self.offset = view[n:], self.offset + n
        if hasattr(os, "posix_fadvise") and self.offset > start:
            # Linux: DONTNEED starts writeback of these dirty pages now, without waiting.
            os.posix_fadvise(self.fd, start, self.offset - start, os.POSIX_FADV_DONTNEED)
