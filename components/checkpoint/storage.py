"""The one storage abstraction: a folder on local disk or under ``gs://bucket/prefix``.

Every step reads and writes checkpoint folders through ``Folder``. Reads are ranged
(``read_range``) so that validate moves header bytes only, never tensor data; on GCS
that is a ranged ``download_as_bytes(start=, end=)``. ``bytes_read`` counts what
actually travelled, which the validate benchmark prints.

Names are always relative POSIX paths inside the folder. A name that would leave the
folder (``..``, an absolute path, a drive, a symlink pointing outside) is refused here,
once, for every caller.
"""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO, Any

from tune2serve.components.errors import (
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
    def write_bytes(self, name: str, data: bytes) -> None:
        """Writes ``name`` whole; ``DestinationError`` when it cannot."""

    @abstractmethod
    def upload_file(self, name: str, local_path: Path) -> None:
        """Copies a local file to ``name``; ``DestinationError`` when it cannot."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Removes ``name``; a missing file is not an error."""

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

    def write_bytes(self, name: str, data: bytes) -> None:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.partial")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:
            raise DestinationError(f"{path}: cannot write: {e.strerror or e}", file=name) from e

    def upload_file(self, name: str, local_path: Path) -> None:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if Path(local_path).resolve() == path.resolve():
                return
            tmp = path.with_name(f".{path.name}.partial")
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, path)
        except OSError as e:
            raise DestinationError(f"{path}: cannot write: {e.strerror or e}", file=name) from e

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink(missing_ok=True)
        except OSError as e:
            raise DestinationError(f"{self.join(name)}: cannot delete: {e.strerror or e}", file=name) from e

    def child(self, subpath: str) -> LocalFolder:
        return LocalFolder(self.root / check_relative_name(subpath.strip("/"), self.uri))


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

    def _translate(self, e: Exception, name: str | None) -> Exception:
        from google.api_core import exceptions as gexc

        where = self.join(name) if name else self.uri
        if isinstance(e, gexc.NotFound):
            return SourceNotFoundError(f"{where}: not found", file=name)
        if isinstance(e, gexc.Forbidden):
            return SourceReadError(f"{where}: permission denied: {e.message}", file=name)
        if isinstance(e, (gexc.RetryError, gexc.ServiceUnavailable, gexc.DeadlineExceeded, ConnectionError,
                          TimeoutError)) or "Connection" in type(e).__name__:
            host = os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"
            return SourceReadError(
                f"{where}: Cloud Storage cannot be reached at {host} (gave up after {REACH_DEADLINE_S:g} s); "
                "check the network, STORAGE_EMULATOR_HOST for a local stack, and your credentials "
                "(gcloud auth application-default login)", file=name)
        return SourceReadError(f"{where}: {type(e).__name__}: {e}", file=name)

    def list(self) -> list[ObjectInfo]:
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
        try:
            return bool(self.bucket.blob(self._key(name)).exists())
        except Exception as e:
            raise self._translate(e, name) from e

    def size(self, name: str) -> int:
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
            return download(self.bucket.blob(self._key(name)))
        except Exception as e:
            from google.api_core import exceptions as gexc

            if isinstance(e, gexc.RequestRangeNotSatisfiable):
                return None
            raise self._translate(e, name) from e

    def read_bytes(self, name: str) -> bytes:
        try:
            data = self.bucket.blob(self._key(name)).download_as_bytes()
        except Exception as e:
            raise self._translate(e, name) from e
        self._count(len(data))
        return bytes(data)

    def fetch_to(self, name: str, local_path: Path) -> None:
        try:
            self.bucket.blob(self._key(name)).download_to_filename(str(local_path))
        except Exception as e:
            raise self._translate(e, name) from e
        self._count(Path(local_path).stat().st_size)

    def write_bytes(self, name: str, data: bytes) -> None:
        try:
            self.bucket.blob(self._key(name)).upload_from_string(data)
        except Exception as e:
            raise DestinationError(f"{self.join(name)}: cannot write: {e}", file=name) from e

    def upload_file(self, name: str, local_path: Path) -> None:
        try:
            self.bucket.blob(self._key(name)).upload_from_filename(str(local_path))
        except Exception as e:
            raise DestinationError(f"{self.join(name)}: cannot write: {e}", file=name) from e

    def delete(self, name: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.bucket.blob(self._key(name)).delete()
        except gexc.NotFound:
            return
        except Exception as e:
            raise DestinationError(f"{self.join(name)}: cannot delete: {e}", file=name) from e

    def child(self, subpath: str) -> GcsFolder:
        rel = check_relative_name(subpath.strip("/"), self.uri)
        return GcsFolder(f"{self.uri}/{rel}", client=self._client)

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
