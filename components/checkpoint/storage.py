"""The one storage abstraction: a folder on local disk or under ``gs://bucket/prefix``.

Every step reads and writes checkpoint folders through ``Folder``. Reads are ranged
(``read_range``) so that validate moves header bytes only, never tensor data; on GCS
that is a ranged ``download_as_bytes(start=, end=)``. ``bytes_read`` counts what
actually travelled, which the validate benchmark prints.

Names are always relative POSIX paths inside the folder. A name that would leave the
folder (``..``, an absolute path, a drive, a symlink pointing outside) is refused here,
once, for every caller.

Writers that must not race (the export's claim on a DEST) use conditional writes with
one meaning on both stores: ``write_bytes``/``delete``/``publish_to`` with
``if_generation_match`` (0: only if absent) succeed only if the object is still at that
generation, else ``ConcurrentWriteError``. GCS: its generation preconditions. Local
disk: a generation made of the file's identity and mtime, compared and written under a
directory ``flock``; creation through ``O_TMPFILE`` + ``link`` (whole or absent, never
replacing). A reader that must see one version of a folder lists it once and reads it
``pinned`` to that listing (on GCS, every read at the generation listed).
"""

from __future__ import annotations

import copy
import errno
import hashlib
import os
import stat
from abc import ABC, abstractmethod
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

from tune2serve.components.errors import (
    ConcurrentWriteError,
    DestinationError,
    SourceNotFoundError,
    SourceReadError,
    UsageError,
)

GCS_SCHEME = "gs://"


@dataclass(frozen=True)
class ObjectInfo:
    """One file in a folder: its relative name and size in bytes; on GCS also what the
    listing returns anyway, the object's crc32c (base64, as GCS gives it) and generation,
    so a folder's content can be identified without reading it (``identity.py``)."""

    name: str
    size: int
    is_symlink_outside: bool = False
    crc32c: str | None = None
    generation: int | None = None
    # Set when the entry is no regular file: "a FIFO", "a symlink loop", ... (local only).
    not_regular: str | None = None
    # When it was last written (seconds since the epoch): GCS's ``updated``, a local
    # file's mtime; what "the newest tuning output" is judged by. Not part of equality:
    # the same bytes written again are the same file.
    updated: float | None = field(default=None, compare=False)


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    for test, words in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return words
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_relative_name(name: str, folder_uri: str) -> str:
    """Refuses names that would escape the folder; returns the normalised name."""
    if not name or "\x00" in name:
        raise SourceReadError(f"{folder_uri}: empty or NUL-containing file name {name!r}", file=name)
    windows = PureWindowsPath(name)
    posix = PurePosixPath(name.replace("\\", "/"))
    if windows.drive or windows.root or posix.is_absolute() or ".." in posix.parts:
        raise SourceReadError(
            f"{folder_uri}: file name {name!r} points outside the checkpoint folder; "
            "shard names must be plain relative names such as 'model-00001-of-00002.safetensors'",
            file=name,
        )
    return str(posix)


class Folder(ABC):
    """A checkpoint folder. Subclasses implement local disk and GCS.

    ``bytes_read``/``requests`` count what travelled; headers may be read from several
    threads at once, so the counters are updated under a lock (``_count``)."""

    uri: str
    bytes_read: int = 0
    requests: int = 0
    _counter_lock = threading.Lock()
    _pinned: list[ObjectInfo] | None = None  # the listing a ``pinned`` folder answers from
    _pinned_by_name: dict[str, ObjectInfo] = {}

    def _count(self, nbytes: int) -> None:
        with self._counter_lock:
            self.bytes_read += nbytes
            self.requests += 1

    @abstractmethod
    def list(self) -> list[ObjectInfo]:
        """Every file below the folder, recursively, sorted by name."""

    @abstractmethod
    def exists(self) -> bool:
        """True when the folder holds at least one file."""

    @abstractmethod
    def has(self, name: str) -> bool:
        """True when ``name`` is a file of the folder (False for names that leave it)."""

    @abstractmethod
    def size(self, name: str) -> int:
        """Size of ``name`` in bytes; ``SourceNotFoundError`` when it is missing."""

    @abstractmethod
    def read_range(self, name: str, start: int, length: int) -> bytes:
        """Exactly the bytes [start, start+length), or fewer at end of file."""

    def read_range_into(self, name: str, start: int, out: memoryview) -> int:
        """Bytes [start, start+len(out)) written into ``out`` (fewer at end of file);
        returns how many. Remote folders write straight into the caller's buffer, so a
        reader that reuses its buffers allocates nothing per range."""
        data = self.read_range(name, start, out.nbytes)
        out[:len(data)] = data
        return len(data)

    @abstractmethod
    def read_bytes(self, name: str) -> bytes:
        """The whole file: only for small files (config, index, tokenizer)."""

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8")

    def local_path(self, name: str) -> Path | None:
        """A path on local disk for memory-mapping, or None for remote folders."""
        return None

    @abstractmethod
    def fetch_to(self, name: str, local_path: Path) -> None:
        """Copies one file to local disk (for tokenizer loading, pickle scanning)."""

    @abstractmethod
    def write_bytes(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectInfo:
        """Writes ``name`` whole and returns what landed (its generation among it);
        ``DestinationError`` when it cannot. With ``if_generation_match`` the write
        happens only if ``name`` is still at that generation (0: only if it does not
        exist), else ``ConcurrentWriteError`` and nothing is written: what a protocol
        with one writer at a time (the export's claim) is built on."""

    @abstractmethod
    def upload_file(self, name: str, local_path: Path, *, move: bool = False) -> ObjectInfo:
        """Copies a local file to ``name`` and returns what landed; ``move``: the local
        file is gone afterwards (a rename when it is on the same disk, so a shard written
        in place is not copied a second time). ``DestinationError`` when it cannot."""

    @abstractmethod
    def delete(self, name: str, *, if_generation_match: int | None = None) -> None:
        """Removes ``name``; a missing file is not an error. With ``if_generation_match``
        only that generation is removed (``ConcurrentWriteError`` when it changed)."""

    @abstractmethod
    def stat(self, name: str) -> ObjectInfo | None:
        """``name``'s size, generation, update time (and crc32c where the store keeps
        one) as it is now; None when it does not exist."""

    @abstractmethod
    def read_versioned(self, name: str) -> tuple[bytes, ObjectInfo] | None:
        """A small file's bytes together with the generation they are (one consistent
        pair, for a later ``if_generation_match``); None when it does not exist."""

    @abstractmethod
    def publish_to(self, name: str, target: Folder, target_name: str | None = None, *,
                   if_source_generation_match: int | None = None,
                   if_generation_match: int | None = None) -> ObjectInfo:
        """Makes ``name`` appear as ``target_name`` (default: the same name) of ``target``,
        a folder of the same store, and returns what landed there. GCS: a server-side
        copy (the source stays); local disk: a rename (the source goes; a copy would write
        a multi-GB shard a second time). The preconditions are those of ``write_bytes``,
        for the source and the target. ``SourceNotFoundError`` when the source is gone."""

    @abstractmethod
    def content_matches(self, name: str, size: int, sha256: str, crc32c: str | None,
                        info: ObjectInfo | None = None) -> ObjectInfo | None:
        """``name``'s entry when its content is the one described (size and crc32c from
        the store's metadata where it keeps one, without reading it — ``info`` from a
        listing saves the request —; else size and sha256 of the bytes); else None."""

    def stat_all(self, names: list[str]) -> dict[str, ObjectInfo]:
        """``stat`` of each of ``names`` that exists, in as few requests as the store
        allows (a listing on GCS)."""
        return {n: info for n in names if (info := self.stat(n)) is not None}

    def computes_crc32c(self) -> bool:
        """Whether the store keeps a crc32c of every object (GCS does): a writer then
        records the crc32c of what it uploads, so what landed is checked without reading
        it back."""
        return False

    def local_root(self) -> Path | None:
        """The folder on local disk (memory-mapped in place), or None for remote folders."""
        return None

    def sync(self, name: str) -> None:
        """Makes ``name`` and the names beside it durable (local disk: fsync of the file and
        of its directory, so a crash cannot leave a file naming data that never reached
        the disk); nothing to do where a write is durable once acknowledged (GCS)."""

    def prune(self) -> None:
        """Removes the empty directories below the folder, and the folder itself when it
        is empty (local disk; GCS has no directories)."""

    def download_dir(self, names: list[str], scratch: Path, workers: int = 8) -> Path:
        """A local folder holding ``names``: the folder itself when it is on local disk,
        else a parallel download into ``scratch`` (at the pinned generations)."""
        root = self.local_root()
        if root is not None:
            return root
        scratch.mkdir(parents=True, exist_ok=True)

        def fetch(name: str) -> None:
            target = scratch / check_relative_name(name, self.uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fetch_to(name, target)

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(names) or 1))) as pool:
            list(pool.map(fetch, names))
        return scratch

    def pinned(self, listing: list[ObjectInfo]) -> Folder:
        """This folder as ``listing`` saw it: ``list()`` answers from it (no second
        listing), and on GCS every read asks for the generation listed, so one run reads
        one version of each object — an object replaced or deleted since is refused by
        name ("source changed"), never read half old, half new. Its children share it."""
        pinned = copy.copy(self)
        pinned._pinned = sorted(listing, key=lambda o: o.name)
        pinned._pinned_by_name = {o.name: o for o in pinned._pinned}
        return pinned

    def _pin_child(self, child: Folder, rel: str) -> Folder:
        """``child`` (the folder ``rel`` below this one) pinned to this folder's listing."""
        if self._pinned is None:
            return child
        cut = len(rel) + 1
        return child.pinned([ObjectInfo(o.name[cut:], o.size, o.is_symlink_outside, o.crc32c, o.generation,
                                        o.not_regular, o.updated) for o in self._pinned if o.name.startswith(rel + "/")])

    @abstractmethod
    def child(self, subpath: str) -> Folder:
        """The folder at ``subpath`` below this one."""

    def join(self, name: str) -> str:
        """The URI of ``name`` inside this folder."""
        return self.uri.rstrip("/") + "/" + check_relative_name(name, self.uri)

    def store_exists(self) -> bool:
        """True when the store that holds the folder exists: the bucket on GCS; local disk
        always does. A listing answers "nothing written here yet" and "no such bucket"
        alike (``SourceNotFoundError``); a caller to whom the first is an answer (no
        tuning output yet) and the second a mistake (a misspelt bucket) asks this."""
        return True

    def parallel_reads(self) -> int:
        """How many reads of this folder are worth making at once: one on local disk, where
        reads are not latency-bound; a remote folder, where each read is a round-trip,
        says more."""
        return 1


class LocalFolder(Folder):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path).expanduser().absolute()
        self.uri = str(self.root)
        self.bytes_read = 0
        self.requests = 0

    def _path(self, name: str) -> Path:
        rel = check_relative_name(name, self.uri)
        path = self.root / rel
        try:
            resolved = path.resolve()
        except (RuntimeError, OSError) as e:  # 3.11 raises RuntimeError on a symlink loop
            raise SourceReadError(f"{path}: is a symlink loop; replace it with the real file", file=rel) from e
        root = self.root.resolve()
        if resolved != root and root not in resolved.parents:
            raise SourceReadError(
                f"{path}: is a symlink that leaves the checkpoint folder ({resolved}); "
                "copy the real file into the folder instead",
                file=rel,
            )
        return path

    def _open_regular(self, name: str) -> IO[bytes]:
        """Opens ``name`` for reading only if it is a regular file. Opened non-blocking
        and checked on the descriptor (no race with a swap): a FIFO named
        ``config.json`` must be refused by name, not block the export forever."""
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError as e:
            raise SourceNotFoundError(f"{path}: no such file", file=name) from e
        except OSError as e:
            raise SourceReadError(f"{path}: cannot read: {e.strerror or e}", file=name) from e
        kind = _kind(os.fstat(fd).st_mode)
        if kind is not None:
            os.close(fd)
            raise SourceReadError(f"{path}: is {kind}, not a regular file; only regular files are read", file=name)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def _regular(self, name: str) -> Path:
        path = self._path(name)
        try:
            kind = _kind(path.stat().st_mode)
        except FileNotFoundError as e:
            raise SourceNotFoundError(f"{self.join(name)}: no such file", file=name) from e
        if kind is not None:
            raise SourceReadError(f"{path}: is {kind}, not a regular file; only regular files are read", file=name)
        return path

    def exists(self) -> bool:
        return self.root.is_dir() and any(self.root.iterdir())

    def list(self) -> list[ObjectInfo]:
        if self._pinned is not None:
            return list(self._pinned)
        if not self.root.is_dir():
            raise SourceNotFoundError(f"{self.uri}: no such folder", file=None)
        root = self.root.resolve()
        found: list[ObjectInfo] = []
        try:
            for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
                for fname in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                    full = Path(dirpath) / fname
                    rel = full.relative_to(self.root).as_posix()
                    found.append(self._entry(full, rel, root))
        except PermissionError as e:
            raise SourceReadError(f"{self.uri}: cannot list folder: {e.strerror}") from e
        return sorted(found, key=lambda o: o.name)

    @staticmethod
    def _entry(full: Path, rel: str, root: Path) -> ObjectInfo:
        """One listing entry, from lstat first: symlinks are resolved (a loop or a
        dangling link is named, not followed) and anything but a regular file is
        marked ``not_regular`` so readers refuse it by name."""
        try:
            if full.is_symlink():
                try:
                    target = full.resolve(strict=True)
                except RuntimeError:
                    return ObjectInfo(rel, 0, not_regular="a symlink loop")
                except OSError:
                    return ObjectInfo(rel, 0, not_regular="a symlink to nothing")
                if target != root and root not in target.parents:
                    return ObjectInfo(rel, 0, is_symlink_outside=True)
                info = target.stat()
            else:
                info = full.lstat()
        except OSError as e:
            return ObjectInfo(rel, 0, not_regular=f"unreadable ({e.strerror or e})")
        kind = _kind(info.st_mode)
        if kind is not None:
            return ObjectInfo(rel, 0, not_regular=kind + (" (symlinked)" if full.is_symlink() else ""))
        return ObjectInfo(rel, info.st_size, updated=info.st_mtime)

    def has(self, name: str) -> bool:
        try:
            return self._path(name).is_file()
        except SourceReadError:
            return False

    def size(self, name: str) -> int:
        return self._regular(name).stat().st_size

    def read_range(self, name: str, start: int, length: int) -> bytes:
        path = self._path(name)
        try:
            with self._open_regular(name) as fh:
                fh.seek(start)
                data = fh.read(max(0, length))
        except FileNotFoundError as e:
            raise SourceNotFoundError(f"{path}: no such file", file=name) from e
        except OSError as e:
            raise SourceReadError(f"{path}: cannot read: {e.strerror or e}", file=name) from e
        self._count(len(data))
        return data

    def read_bytes(self, name: str) -> bytes:
        path = self._path(name)
        try:
            with self._open_regular(name) as fh:
                data = fh.read()
        except FileNotFoundError as e:
            raise SourceNotFoundError(f"{path}: no such file", file=name) from e
        except OSError as e:
            raise SourceReadError(f"{path}: cannot read: {e.strerror or e}", file=name) from e
        self._count(len(data))
        return data

    def local_path(self, name: str) -> Path | None:
        return self._path(name)

    def fetch_to(self, name: str, local_path: Path) -> None:
        with self._open_regular(name) as src, open(local_path, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)

    def write_bytes(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectInfo:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # FileExistsError too: a file stands where a folder must be
            raise DestinationError(f"{path}: cannot write: {e.strerror or e}", file=name) from e
        try:
            if if_generation_match is None:
                tmp = path.with_name(f".{path.name}.partial")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            else:
                with _dir_lock(path.parent):
                    before = self._check_generation(name, path, if_generation_match)
                    if before is None:
                        _create_exclusive(path, data)
                    else:
                        tmp = path.with_name(f".{path.name}.partial")
                        tmp.write_bytes(data)
                        os.replace(tmp, path)
                        _after(path, before)
        except FileExistsError as e:
            raise ConcurrentWriteError(f"{path}: was created by another writer meanwhile", file=name) from e
        except DestinationError:  # refused (ConcurrentWriteError) or the lock never came
            raise
        except OSError as e:
            raise DestinationError(f"{path}: cannot write: {e.strerror or e}", file=name) from e
        return self._landed(name, path)

    def upload_file(self, name: str, local_path: Path, *, move: bool = False) -> ObjectInfo:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if Path(local_path).resolve() != path.resolve():
                try:
                    if not move:
                        raise OSError(errno.EXDEV, "copy")
                    os.replace(local_path, path)
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
                    tmp = path.with_name(f".{path.name}.partial")
                    shutil.copyfile(local_path, tmp)
                    os.replace(tmp, path)
                    if move:
                        Path(local_path).unlink()
        except OSError as e:
            raise DestinationError(f"{path}: cannot write: {e.strerror or e}", file=name) from e
        return self._landed(name, path)

    def delete(self, name: str, *, if_generation_match: int | None = None) -> None:
        try:
            path = self._path(name)
            if if_generation_match is None:
                path.unlink(missing_ok=True)
                return
            with _dir_lock(path.parent) if path.parent.is_dir() else _no_lock():
                if self._check_generation(name, path, if_generation_match) is not None:
                    path.unlink()
        except FileNotFoundError:
            return
        except DestinationError:
            raise
        except OSError as e:
            raise DestinationError(f"{self.join(name)}: cannot delete: {e.strerror or e}", file=name) from e

    def child(self, subpath: str) -> LocalFolder:
        rel = check_relative_name(subpath.strip("/"), self.uri)
        return self._pin_child(LocalFolder(self.root / rel), rel)  # type: ignore[return-value]

    def stat(self, name: str) -> ObjectInfo | None:
        path = self._path(name)
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise SourceReadError(f"{path}: cannot read: {e.strerror or e}", file=name) from e
        kind = _kind(info.st_mode)
        if kind is not None:
            raise SourceReadError(f"{path}: is {kind}, not a regular file", file=name)
        return ObjectInfo(name, info.st_size, generation=_local_generation(info), updated=info.st_mtime)

    def read_versioned(self, name: str) -> tuple[bytes, ObjectInfo] | None:
        try:
            with self._open_regular(name) as fh:
                info = os.fstat(fh.fileno())  # the file the bytes come from, even if replaced meanwhile
                data = fh.read()
        except SourceNotFoundError:
            return None
        self._count(len(data))
        return data, ObjectInfo(name, len(data), generation=_local_generation(info), updated=info.st_mtime)

    def publish_to(self, name: str, target: Folder, target_name: str | None = None, *,
                   if_source_generation_match: int | None = None,
                   if_generation_match: int | None = None) -> ObjectInfo:
        if not isinstance(target, LocalFolder):
            raise UsageError(f"{self.uri}: files are published within one store, not to {target.uri}")
        tname = target_name or name
        src, dst = self._path(name), target._path(tname)
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            with _dir_lock(dst.parent):
                now = self.stat(name)
                if now is None:
                    raise SourceNotFoundError(f"{src}: not found", file=name)
                if if_source_generation_match is not None and now.generation != if_source_generation_match:
                    raise ConcurrentWriteError(f"{src}: was replaced by another writer meanwhile", file=name)
                if if_generation_match is not None and target._check_generation(tname, dst, if_generation_match) is None:
                    os.link(src, dst)  # exclusive: fails if the target appeared meanwhile
                    os.unlink(src)
                else:
                    os.replace(src, dst)
        except FileExistsError as e:
            raise ConcurrentWriteError(f"{dst}: was created by another writer meanwhile", file=tname) from e
        except (SourceNotFoundError, DestinationError):
            raise
        except OSError as e:
            raise DestinationError(f"{dst}: cannot write: {e.strerror or e}", file=tname) from e
        return target._landed(tname, dst)

    def content_matches(self, name: str, size: int, sha256: str, crc32c: str | None,
                        info: ObjectInfo | None = None) -> ObjectInfo | None:
        now = self.stat(name)
        if now is None or now.size != size:
            return None
        digest = hashlib.sha256()
        with self._open_regular(name) as fh:
            for chunk in iter_chunks(fh, 16 << 20):
                digest.update(chunk)
        return now if digest.hexdigest() == sha256 else None

    def local_root(self) -> Path | None:
        return self.root

    def sync(self, name: str) -> None:
        path = self._path(name)
        for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))):
            fd = os.open(target, flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def prune(self) -> None:
        if not self.root.is_dir():
            return
        for d in sorted((p for p in self.root.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
            if not any(d.iterdir()):
                d.rmdir()
        if not any(self.root.iterdir()):
            self.root.rmdir()

    def _check_generation(self, name: str, path: Path, expected: int) -> os.stat_result | None:
        """Under the folder's lock: the file's stat when it is at generation ``expected``
        (None when ``expected`` is 0 and it does not exist); else ``ConcurrentWriteError``."""
        try:
            info = path.stat()
        except FileNotFoundError:
            info = None
        if expected == 0 and info is None:
            return None
        if info is None or expected == 0 or _local_generation(info) != expected:
            raise ConcurrentWriteError(f"{path}: was {'created' if expected == 0 else 'replaced or removed'} by "
                                       "another writer meanwhile", file=name)
        return info

    def _landed(self, name: str, path: Path) -> ObjectInfo:
        info = path.stat()
        return ObjectInfo(name, info.st_size, generation=_local_generation(info), updated=info.st_mtime)


def _local_generation(info: os.stat_result) -> int:
    """A local file's generation: which file (device, inode) and when it was last written
    (mtime in ns), folded into a positive 56-bit integer like a GCS generation. A rename
    keeps it (so a published shard is recognisably the one staged); every write through
    ``write_bytes`` with a precondition moves the mtime forward, so one name never shows
    the same generation twice."""
    key = f"{info.st_dev}:{info.st_ino}:{info.st_mtime_ns}:{info.st_size}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=7).digest(), "big") + 1


LOCK_WAIT_S = 30.0  # a directory lock is held for one small write; longer means a frozen holder


@contextmanager
def _dir_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on a directory: the local stand-in for a store's atomic
    conditional write. Every conditional write, delete and publish in that directory
    takes it, so read-compare-write is one step; the kernel drops it when a holder dies.
    It is held for one small write, so a wait beyond ``LOCK_WAIT_S`` means a holder frozen
    inside it (stopped, swapped out): ``DestinationError`` naming the folder, not a hang."""
    import fcntl
    import time

    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DestinationError(f"{folder}: another process has held its write lock for more than "
                                           f"{LOCK_WAIT_S:g} s (stopped or frozen?); nothing was written") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def _after(path: Path, before: os.stat_result) -> None:
    """Keeps the mtime moving forward across rewrites (coarse filesystem clocks can give
    two writes in a row the same one), so a generation is never repeated."""
    now = path.stat()
    if now.st_mtime_ns <= before.st_mtime_ns:
        later = before.st_mtime_ns + 1
        os.utime(path, ns=(later, later))


def _create_exclusive(path: Path, data: bytes) -> None:
    """Creates ``path`` holding ``data`` (FileExistsError when it exists), whole or not at
    all: written to an unnamed O_TMPFILE, then linked to its name, so a writer killed at
    any instant leaves nothing behind; where the filesystem has no O_TMPFILE, a named
    ``.NAME.partial`` is linked instead (O_EXCL-like: ``link`` never replaces)."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            fd = os.open(path.parent, tmpfile | os.O_WRONLY, 0o644)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                view = memoryview(data)
                while view.nbytes:
                    view = view[os.write(fd, view):]
                os.link(f"/proc/self/fd/{fd}", path, follow_symlinks=True)
                return
            except FileExistsError:
                raise
            except OSError:
                pass  # no /proc: the named way below
            finally:
                os.close(fd)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → (``bucket``, ``a/b``); refuses anything else."""
    if not uri.startswith(GCS_SCHEME):
        raise UsageError(f"{uri!r} is not a gs:// URI; expected gs://BUCKET/PREFIX")
    rest = uri[len(GCS_SCHEME):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UsageError(f"{uri!r} names no bucket; expected gs://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


def storage_client() -> Any:
    """The google-cloud-storage client: the emulator when STORAGE_EMULATOR_HOST is set
    (anonymous credentials, as fake-gcs-server expects), else Application Default
    Credentials. Imported lazily: google-cloud-storage costs ~0.3 s to import."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=os.environ.get("TUNE2SERVE_PROJECT", "local-project"),
                              credentials=AnonymousCredentials())
    return storage.Client()


# The first call to a source (its listing) says whether it can be reached at all: a
# short, bounded retry, so an unreachable bucket fails in seconds, not after the
# client's default two minutes; later reads keep the client's default policy.
REACH_DEADLINE_S = 15.0
REACH_TIMEOUT_S = 10.0
# Ranged reads in flight at once on one gs:// folder (headers: a round-trip each).
GCS_PARALLEL_READS = 8


def _reach_retry() -> Any:
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(REACH_DEADLINE_S)


class GcsFolder(Folder):
    def __init__(self, uri: str, client: Any = None) -> None:
        self.bucket_name, self.prefix = parse_gcs_uri(uri)
        self.uri = f"{GCS_SCHEME}{self.bucket_name}/{self.prefix}".rstrip("/")
        self._client = client
        self.bytes_read = 0
        self.requests = 0

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = storage_client()
        return self._client

    @property
    def bucket(self) -> Any:
        return self.client.bucket(self.bucket_name)

    def _key(self, name: str) -> str:
        rel = check_relative_name(name, self.uri)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _listed(self, name: str) -> ObjectInfo | None:
        """``name``'s entry in the listing this folder is pinned to (None: not pinned, or
        not listed)."""
        if self._pinned is None:
            return None
        return self._pinned_by_name.get(check_relative_name(name, self.uri))

    def _blob(self, name: str) -> Any:
        """The blob to read: at the generation listed when the folder is pinned."""
        listed = self._listed(name)
        return self.bucket.blob(self._key(name), generation=listed.generation if listed else None)

    def _translate(self, e: Exception, name: str | None) -> Exception:
        from google.api_core import exceptions as gexc

        from tune2serve.components.transport import is_unreachable

        where = self.join(name) if name else self.uri
        if isinstance(e, gexc.NotFound) and name and (listed := self._listed(name)) is not None and listed.generation:
            return SourceReadError(
                f"{where}: source changed: the object was replaced or deleted while this run read it (generation "
                f"{listed.generation}, listed when the run started, is gone); nothing mixes old and new bytes. "
                "Rerun to export what is there now", file=name)
        if isinstance(e, gexc.NotFound):
            return SourceNotFoundError(f"{where}: not found", file=name)
        if isinstance(e, gexc.Forbidden):
            return SourceReadError(f"{where}: permission denied: {e.message}", file=name)
        if isinstance(e, (gexc.RetryError, gexc.ServiceUnavailable, gexc.DeadlineExceeded)) or is_unreachable(e):
            host = os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"
            return SourceReadError(
                f"{where}: Cloud Storage cannot be reached at {host} (gave up after {REACH_DEADLINE_S:g} s); "
                "check the network, STORAGE_EMULATOR_HOST for a local stack, and your credentials "
                "(gcloud auth application-default login)", file=name)
        return SourceReadError(f"{where}: {type(e).__name__}: {e}", file=name)

    def list(self) -> list[ObjectInfo]:
        if self._pinned:
            return list(self._pinned)
        if self._pinned is not None:
            raise SourceNotFoundError(f"{self.uri}: no objects under this prefix")
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            blobs = list(self.client.list_blobs(self.bucket_name, prefix=prefix, retry=_reach_retry(),
                                                timeout=REACH_TIMEOUT_S))
        except Exception as e:  # google.api_core errors and transport errors alike
            raise self._translate(e, None) from e
        self._count(0)
        found = [
            ObjectInfo(b.name[len(prefix):], int(b.size or 0), crc32c=b.crc32c or None,
                       generation=int(b.generation) if b.generation else None,
                       updated=b.updated.timestamp() if b.updated else None)
            for b in blobs
            if not b.name.endswith("/") and b.name[len(prefix):]
        ]
        if not found:
            raise SourceNotFoundError(f"{self.uri}: no objects under this prefix")
        return sorted(found, key=lambda o: o.name)

    def exists(self) -> bool:
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            return any(True for _ in self.client.list_blobs(self.bucket_name, prefix=prefix, max_results=1,
                                                            retry=_reach_retry(), timeout=REACH_TIMEOUT_S))
        except Exception as e:
            from google.api_core import exceptions as gexc

            if isinstance(e, gexc.NotFound):
                return False
            raise self._translate(e, None) from e

    def has(self, name: str) -> bool:
        if self._pinned is not None:
            return self._listed(name) is not None
        try:
            return bool(self.bucket.blob(self._key(name)).exists())
        except Exception as e:
            raise self._translate(e, name) from e

    def size(self, name: str) -> int:
        if (listed := self._listed(name)) is not None:
            return listed.size
        try:
            blob = self.bucket.get_blob(self._key(name))
        except Exception as e:
            raise self._translate(e, name) from e
        if blob is None:
            raise SourceNotFoundError(f"{self.join(name)}: not found", file=name)
        return int(blob.size or 0)

    def read_range(self, name: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        data = self._ranged(name, lambda blob: blob.download_as_bytes(start=start, end=start + length - 1, checksum=None))
        self._count(len(data or b""))
        return bytes(data[:length]) if data else b""

    def read_range_into(self, name: str, start: int, out: memoryview) -> int:
        if out.nbytes <= 0:
            return 0
        sink = _BufferSink(out)
        self._ranged(name, lambda blob: blob.download_to_file(sink, start=start, end=start + out.nbytes - 1, checksum=None))
        self._count(sink.pos)
        return sink.pos

    def _ranged(self, name: str, download: Any) -> Any:
        """``download(blob)``, its errors translated; None past the end of the object."""
        try:
            return download(self._blob(name))
        except Exception as e:
            from google.api_core import exceptions as gexc

            if isinstance(e, gexc.RequestRangeNotSatisfiable):
                return None
            raise self._translate(e, name) from e

    def read_bytes(self, name: str) -> bytes:
        try:
            data = self._blob(name).download_as_bytes()
        except Exception as e:
            raise self._translate(e, name) from e
        self._count(len(data))
        return bytes(data)

    def fetch_to(self, name: str, local_path: Path) -> None:
        try:
            self._blob(name).download_to_filename(str(local_path))
        except Exception as e:
            raise self._translate(e, name) from e
        self._count(Path(local_path).stat().st_size)

    def write_bytes(self, name: str, data: bytes, *, if_generation_match: int | None = None) -> ObjectInfo:
        blob = self.bucket.blob(self._key(name))
        try:
            blob.upload_from_string(data, if_generation_match=if_generation_match)
        except Exception as e:
            raise self._write_error(e, name, "write") from e
        return self._info(name, blob)

    def upload_file(self, name: str, local_path: Path, *, move: bool = False) -> ObjectInfo:
        blob = self.bucket.blob(self._key(name))
        try:
            blob.upload_from_filename(str(local_path))
        except Exception as e:
            raise self._write_error(e, name, "write") from e
        if move:
            Path(local_path).unlink(missing_ok=True)
        return self._info(name, blob)

    def delete(self, name: str, *, if_generation_match: int | None = None) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.bucket.blob(self._key(name)).delete(if_generation_match=if_generation_match)
        except gexc.NotFound:
            return
        except Exception as e:
            raise self._write_error(e, name, "delete") from e

    def child(self, subpath: str) -> GcsFolder:
        rel = check_relative_name(subpath.strip("/"), self.uri)
        return self._pin_child(GcsFolder(f"{self.uri}/{rel}", client=self._client), rel)  # type: ignore[return-value]

    def stat(self, name: str) -> ObjectInfo | None:
        try:
            blob = self.bucket.get_blob(self._key(name))
        except Exception as e:
            raise self._translate(e, name) from e
        return self._info(name, blob) if blob is not None else None

    def stat_all(self, names: list[str]) -> dict[str, ObjectInfo]:
        try:
            listed = {o.name: o for o in self.list()}
        except SourceNotFoundError:
            return {}
        return {n: listed[n] for n in names if n in listed}

    def read_versioned(self, name: str) -> tuple[bytes, ObjectInfo] | None:
        from google.api_core import exceptions as gexc

        blob = self.bucket.blob(self._key(name))
        try:
            data = blob.download_as_bytes()  # the bytes and, from the same response, their generation
        except gexc.NotFound:
            return None
        except Exception as e:
            raise self._translate(e, name) from e
        self._count(len(data))
        generation = int(blob.generation) if blob.generation else None
        try:  # when that generation was written; None when it has been replaced since (then stale anyway)
            meta = self.bucket.get_blob(self._key(name), generation=generation)
        except gexc.NotFound:
            meta = None
        except Exception as e:
            raise self._translate(e, name) from e
        updated = meta.updated.timestamp() if meta is not None and meta.updated else None
        return bytes(data), ObjectInfo(name, len(data), crc32c=blob.crc32c or None, generation=generation, updated=updated)

    def publish_to(self, name: str, target: Folder, target_name: str | None = None, *,
                   if_source_generation_match: int | None = None,
                   if_generation_match: int | None = None) -> ObjectInfo:
        from google.api_core import exceptions as gexc

        if not isinstance(target, GcsFolder):
            raise UsageError(f"{self.uri}: objects are published within one store, not to {target.uri}")
        tname = target_name or name
        try:
            blob = self.bucket.copy_blob(self.bucket.blob(self._key(name)), target.client.bucket(target.bucket_name),
                                         target._key(tname), if_generation_match=if_generation_match,
                                         if_source_generation_match=if_source_generation_match)
        except gexc.NotFound as e:
            raise SourceNotFoundError(f"{self.join(name)}: not found (removed by another writer?)", file=name) from e
        except Exception as e:
            raise target._write_error(e, tname, "write") from e
        return target._info(tname, blob)

    def content_matches(self, name: str, size: int, sha256: str, crc32c: str | None,
                        info: ObjectInfo | None = None) -> ObjectInfo | None:
        now = info if info is not None else self.stat(name)
        if now is None or not crc32c or not now.crc32c:
            return None
        return now if (now.size, now.crc32c) == (size, crc32c) else None

    def computes_crc32c(self) -> bool:
        return True

    @staticmethod
    def _info(name: str, blob: Any) -> ObjectInfo:
        """What the store says of an object it just wrote, copied or listed."""
        return ObjectInfo(name, int(blob.size or 0), crc32c=blob.crc32c or None,
                          generation=int(blob.generation) if blob.generation else None,
                          updated=blob.updated.timestamp() if blob.updated else None)

    def _write_error(self, e: Exception, name: str, verb: str) -> DestinationError:
        from google.api_core import exceptions as gexc

        if isinstance(e, gexc.PreconditionFailed):
            return ConcurrentWriteError(f"{self.join(name)}: was changed by another writer meanwhile; "
                                        f"this {verb} did not happen", file=name)
        return DestinationError(f"{self.join(name)}: cannot {verb}: {e}", file=name)

    def store_exists(self) -> bool:
        try:
            return bool(self.bucket.exists(retry=_reach_retry(), timeout=REACH_TIMEOUT_S))
        except Exception as e:  # google.api_core errors and transport errors alike
            raise self._translate(e, None) from e

    def parallel_reads(self) -> int:
        return GCS_PARALLEL_READS


class _BufferSink:
    """A writable file object over a fixed buffer: the storage client streams a ranged
    download into it; bytes beyond the buffer (a server sending more than asked) are
    dropped, as ``read_range`` drops them."""

    def __init__(self, out: memoryview) -> None:
        self.out, self.pos = out, 0

    def write(self, data: bytes) -> int:
        n = min(len(data), self.out.nbytes - self.pos)
        self.out[self.pos:self.pos + n] = memoryview(data)[:n]
        self.pos += n
        return len(data)

    def tell(self) -> int:
        return self.pos


def open_folder(uri: str | os.PathLike[str], client: Any = None) -> Folder:
    """The folder at a local path or ``gs://bucket/prefix``."""
    text = os.fspath(uri)
    if text.startswith(GCS_SCHEME):
        return GcsFolder(text, client=client)
    if "://" in text:
        raise UsageError(f"{text!r}: unsupported scheme; give a local path or gs://BUCKET/PREFIX")
    return LocalFolder(text)


@dataclass
class LocalCopy:
    """A temporary local copy of a few small files (tokenizer, config) for libraries that
    only read from disk. Deleted on exit."""

    folder: Folder
    names: list[str]

    def __enter__(self) -> Path:
        self._tmp = tempfile.TemporaryDirectory(prefix="tune2serve-")
        root = Path(self._tmp.name)
        for name in self.names:
            target = root / check_relative_name(name, self.folder.uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.folder.fetch_to(name, target)
        return root

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()


def iter_chunks(fh: IO[bytes], size: int = 8 << 20) -> Iterator[bytes]:
    while chunk := fh.read(size):
        yield chunk
