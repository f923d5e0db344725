"""Scans a PyTorch ``.bin`` pickle for the globals it would import, without unpickling.

``torch.load(weights_only=True)`` already refuses unknown globals; this scan runs first
so that validate can report the offending global by name (and so nothing of an
untrusted pickle ever runs, not even torch's restricted unpickler, before we know it is
plain tensors). A ``.bin`` is a zip archive (torch ≥ 1.6) whose ``*/data.pkl`` is the
pickle, or a legacy bare pickle stream.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from typing import IO

from tune2serve.components.checkpoint.storage import Folder
from tune2serve.components.errors import UnsafePickleError

# What a plain state dict of tensors references.
ALLOWED_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "dtype"),
    ("builtins", "set"),
    *(("torch", f"{t}Storage") for t in (
        "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
        "ComplexFloat", "ComplexDouble", "Untyped")),
    *(("torch", t) for t in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")),
})
MAX_PICKLE_BYTES = 256 * 1024 * 1024
# torch's legacy (pre-zip) format: five pickles in a row, the first being this number.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
READAHEAD_BYTES = 64 * 1024


def _stream_globals(fh: IO[bytes]) -> tuple[list[tuple[str, str]], list[object]]:
    """Globals of the one pickle at ``fh``'s position (genops stops at STOP), and the
    constants it pushed (to recognise the legacy magic number)."""
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    constants: list[object] = []
    try:
        for opcode, arg, _pos in pickletools.genops(fh):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif opcode.name == "GLOBAL":
                module, _, gname = str(arg).partition(" ")
                found.append((module, gname))
            elif opcode.name == "STACK_GLOBAL":
                found.append((strings[-2], strings[-1]) if len(strings) >= 2 else ("?", "?"))
            elif opcode.name in ("INST", "OBJ"):
                found.append(("?", str(arg)))
            elif opcode.name in ("LONG1", "LONG4", "LONG", "INT", "BININT", "BININT1", "BININT2"):
                constants.append(arg)
    except Exception as e:  # pickletools raises ValueError and others on garbage
        raise UnsafePickleError(f"the pickle stream does not parse ({e}); it is corrupt or not a PyTorch checkpoint") from e
    return found, constants


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) a pickle stream would import, in order of appearance."""
    return _stream_globals(io.BytesIO(data))[0]


def extract_pickle(data: bytes) -> bytes:
    """The pickle inside a torch zip archive, or ``data`` itself for a legacy file."""
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not names:
                    raise UnsafePickleError("zip archive has no data.pkl: not a PyTorch checkpoint")
                info = zf.getinfo(names[0])
                if info.file_size > MAX_PICKLE_BYTES:
                    raise UnsafePickleError(f"data.pkl is {info.file_size} bytes, above the {MAX_PICKLE_BYTES} limit")
                return zf.read(names[0])
        except zipfile.BadZipFile as e:
            raise UnsafePickleError(f"corrupt zip archive: {e}") from e
    return data


def unsafe_globals(data: bytes) -> list[str]:
    """The globals outside the tensor allow-list, as ``module.name`` strings."""
    pickle = extract_pickle(data)
    return sorted({f"{m}.{n}" for m, n in pickle_globals(pickle) if (m, n) not in ALLOWED_GLOBALS})


def check_pickle(data: bytes, file: str) -> None:
    """Raises ``UnsafePickleError`` naming the file and the globals unless the pickle
    references tensor types only."""
    try:
        bad = unsafe_globals(data)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{file}: {e}", file=file) from e
    if bad:
        raise UnsafePickleError(
            f"{file}: pickle references {', '.join(bad)}, which a plain tensor checkpoint never does; "
            "it was not loaded. Re-save the weights as safetensors from a trusted environment.",
            file=file,
        )


class _RangeReader(io.RawIOBase):
    """A seekable read-only file over ``Folder.read_range``: zipfile and pickletools
    read a remote ``.bin`` through it, so only the zip directory and ``data.pkl`` move,
    never the tensor storages."""

    def __init__(self, folder: Folder, name: str, size: int) -> None:
        self.folder, self.name, self.size, self.pos = folder, name, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), max(0, self.size - self.pos))
        if want <= 0:
            return 0
        data = self.folder.read_range(self.name, self.pos, want)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def open_ranged(folder: Folder, name: str, size: int) -> IO[bytes]:
    """A buffered, seekable reader of ``name`` that fetches ``READAHEAD_BYTES`` at a time."""
    return io.BufferedReader(_RangeReader(folder, name, size), buffer_size=READAHEAD_BYTES)


def scan_folder_file(folder: Folder, name: str, size: int | None = None) -> list[str]:
    """The unsafe globals of the ``.bin`` ``name`` in ``folder``, reading only what the
    scan needs: for a zip archive (torch >= 1.6) its central directory and ``data.pkl``;
    for a legacy file the leading pickles (never the storages behind them). Raises
    ``UnsafePickleError`` (naming the file) for a corrupt archive or pickle."""
    size = folder.size(name) if size is None else size
    try:
        magic = folder.read_range(name, 0, 4)
        with open_ranged(folder, name, size) as fh:
            if magic == b"PK\x03\x04":
                found = _zip_globals(fh)
            else:
                found = _legacy_globals(fh, size)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}", file=name) from e
    return sorted({f"{m}.{n}" for m, n in found if (m, n) not in ALLOWED_GLOBALS})


def _zip_globals(fh: IO[bytes]) -> list[tuple[str, str]]:
    try:
        with zipfile.ZipFile(fh) as zf:
            names = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not names:
                raise UnsafePickleError("zip archive has no data.pkl: not a PyTorch checkpoint")
            info = zf.getinfo(names[0])
            if max(info.file_size, info.compress_size) > MAX_PICKLE_BYTES:
                raise UnsafePickleError(f"data.pkl is {info.file_size} bytes, above the {MAX_PICKLE_BYTES} limit")
            with zf.open(names[0]) as member:
                return _stream_globals(io.BufferedReader(member))[0]  # type: ignore[arg-type]
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise UnsafePickleError(f"corrupt zip archive: {e}") from e


def _legacy_globals(fh: IO[bytes], size: int) -> list[tuple[str, str]]:
    """A bare pickle, or torch's legacy format: magic number, protocol, sys info, the
    state dict, the storage keys; the raw storages that follow are never read."""
    found, constants = _stream_globals(fh)
    if LEGACY_MAGIC in constants:
        for _ in range(4):
            if fh.tell() >= size:
                break
            more, _consts = _stream_globals(fh)
            found.extend(more)
    return found
