"""Scans a PyTorch ``.bin`` for the globals it would import, without unpickling.

``torch.load(weights_only=True)`` already refuses unknown globals, but Vertex's model
server is not ours: a checkpoint that validate passes must not be able to run code in
any loader. So the scan is exact rather than heuristic:

- Every pickle opcode runs on a simulated stack, metastack and memo, as the unpickler
  would run it (``_Machine``). A global is whatever GLOBAL, INST or STACK_GLOBAL
  would import, with STACK_GLOBAL's operands taken from the simulated stack, so names
  that come from the memo (BINGET), from STRING/BINSTRING opcodes, or after decoy
  strings are seen for what they are. A global name that is not a literal string on
  the stack, and the copyreg extension opcodes (EXT1/2/4), are refused outright.
  Callables (REDUCE, NEWOBJ, OBJ) can only be globals, so an allow-list of globals
  bounds what any loader can call; BUILD on an imported object itself (which would
  set attributes on a class or function, a known ModelScan bypass) is refused.
- A zip archive is read as torch reads it: the archive name is the first member's
  folder, the pickle is ``<archive>/data.pkl``; a duplicate name, a member outside
  that folder, a second pickle or a member torch never writes is refused, so the
  member scanned is the member loaded.
- A legacy (non-zip) file is scanned pickle by pickle: torch's legacy format holds
  five (magic number, protocol, sys info, the state dict, storage keys), a bare pickle
  one, and bytes after a bare pickle are refused. Torch's older tar format is refused.
"""

from __future__ import annotations

import io
import pickletools
import re
import tarfile
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
LEGACY_PICKLES = 5
READAHEAD_BYTES = 64 * 1024
# The members torch.save writes below the archive folder; storages are raw bytes.
_TORCH_MEMBER = re.compile(
    r"(data\.pkl|version|byteorder|\.format_version|\.storage_alignment|\.data/version|"
    r"\.data/serialization_id|data/[A-Za-z0-9_]+)")

Global = tuple[str, str]


class _Opaque:
    """A value the scan does not need to know (a tuple, a tensor, a call's result)."""


_OPAQUE = _Opaque()


class _Imported(_Opaque):
    """A global on the stack: a class or function, which BUILD must never modify."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
_MARK_OPS = {"APPENDS", "LIST", "TUPLE", "DICT", "SETITEMS", "ADDITEMS", "FROZENSET", "POP_MARK", "INST", "OBJ"}
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}


class _Machine:
    """The unpickler's stack, metastack and memo, with values reduced to what decides a
    global: strings and ints are kept, everything else is opaque. Mirrors the pure
    Python ``pickle._Unpickler`` opcode by opcode; any state the real machine would
    fail on (stack underflow, unknown memo key) is refused as corrupt."""

    def __init__(self) -> None:
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo: dict[int, object] = {}
        self.globals: list[Global] = []

    def pop(self) -> object:
        if not self.stack:
            raise UnsafePickleError("the pickle pops an empty stack; it is corrupt or crafted")
        return self.stack.pop()

    def pop_mark(self) -> list[object]:
        if not self.metastack:
            raise UnsafePickleError("the pickle closes a MARK it never opened; it is corrupt or crafted")
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def run(self, fh: IO[bytes]) -> object:
        """Runs one pickle (to its STOP) and returns the value it would produce."""
        try:
            for op, arg, _pos in pickletools.genops(fh):
                name = op.name
                if name == "STOP":
                    return self.pop()
                self.step(name, op, arg)
        except UnsafePickleError:
            raise
        except Exception as e:  # pickletools raises ValueError and others on garbage
            raise UnsafePickleError(f"the pickle stream does not parse ({e}); it is corrupt or not a PyTorch checkpoint") from e
        raise UnsafePickleError("the pickle stream ends without STOP; it is truncated")

    def step(self, name: str, op: pickletools.OpcodeInfo, arg: object) -> None:
        if name in _STRING_OPS:
            self.stack.append(str(arg))
        elif name in _INT_OPS:
            self.stack.append(arg)
        elif name == "MARK":
            self.metastack.append(self.stack)
            self.stack = []
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not self.stack:
                raise UnsafePickleError("the pickle memoizes an empty stack; it is corrupt or crafted")
            self.memo[int(arg)] = self.stack[-1]  # type: ignore[call-overload]
        elif name == "MEMOIZE":
            if not self.stack:
                raise UnsafePickleError("the pickle memoizes an empty stack; it is corrupt or crafted")
            self.memo[len(self.memo)] = self.stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            key = int(arg)  # type: ignore[call-overload]
            if key not in self.memo:
                raise UnsafePickleError(f"the pickle reads memo entry {key}, which was never stored")
            self.stack.append(self.memo[key])
        elif name == "DUP":
            if not self.stack:
                raise UnsafePickleError("the pickle duplicates an empty stack; it is corrupt or crafted")
            self.stack.append(self.stack[-1])
        elif name == "POP":
            if self.stack:
                self.stack.pop()
            else:
                self.pop_mark()
        elif name in ("GLOBAL", "INST"):
            module, _, gname = str(arg).partition(" ")
            self.globals.append((module, gname))
            if name == "INST":
                self.pop_mark()
                self.stack.append(_OPAQUE)
            else:
                self.stack.append(_Imported(module, gname))
        elif name == "STACK_GLOBAL":
            gname, module = self.pop(), self.pop()
            if not (isinstance(module, str) and isinstance(gname, str)):
                raise UnsafePickleError("STACK_GLOBAL imports a name that is not a literal string; refusing a computed import")
            self.globals.append((module, gname))
            self.stack.append(_Imported(module, gname))
        elif name == "BUILD":
            self.pop()
            target = self.pop()
            if isinstance(target, _Imported):
                raise UnsafePickleError(
                    f"the pickle sets attributes on {target.module}.{target.name} itself (BUILD on an imported "
                    "object); refusing a pickle that rewrites what it imports")
            self.stack.append(_OPAQUE)
        elif name in ("EXT1", "EXT2", "EXT4"):
            raise UnsafePickleError(f"the pickle imports through the copyreg extension registry ({name} {arg}); refused")
        elif name in ("PROTO", "FRAME", "READONLY_BUFFER"):
            pass
        else:
            self.generic(name, op)

    def generic(self, name: str, op: pickletools.OpcodeInfo) -> None:
        """Stack effect from pickletools' own opcode table: constants, containers,
        REDUCE/BUILD/NEWOBJ/OBJ/PERSID all pop their inputs and push opaque results."""
        before = op.stack_before
        if name in _MARK_OPS:
            self.pop_mark()
            below = before.index(pickletools.markobject)
        else:
            below = len(before)
        for _ in range(below):
            self.pop()
        for _ in op.stack_after:
            self.stack.append(_OPAQUE)


def _run_pickle(fh: IO[bytes]) -> tuple[list[Global], object]:
    machine = _Machine()
    value = machine.run(fh)
    return machine.globals, value


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) the pickles of a legacy stream would import, in order."""
    return _legacy_globals(io.BytesIO(data), len(data))


def _unsafe(found: list[Global]) -> list[str]:
    return sorted({f"{m}.{n}" for m, n in found if (m, n) not in ALLOWED_GLOBALS})


def _is_tar(head: bytes) -> bool:
    """True when the first 512 bytes are a tar header with a valid checksum: torch's
    pre-1.6 tar format, which torch.load tries before anything else."""
    if len(head) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(head[:512], tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def scan_stream(fh: IO[bytes], size: int, head: bytes | None = None) -> list[str]:
    """The unsafe globals of a ``.bin`` read through ``fh`` (seekable, at 0), reading only
    what the scan needs: a zip's central directory and ``data.pkl``, or a legacy file's
    leading pickles (never the storages behind them). Raises ``UnsafePickleError`` for a
    file whose structure is corrupt, ambiguous or not what torch writes."""
    if head is None:
        head = fh.read(512)
        fh.seek(0)
    if head[:4] == b"PK\x03\x04":
        return _unsafe(_zip_globals(fh))
    if _is_tar(head):
        raise UnsafePickleError(
            "is in torch's legacy tar format, which no current loader reads safely; re-save it as safetensors")
    return _unsafe(_legacy_globals(fh, size))


def unsafe_globals(data: bytes) -> list[str]:
    """The globals outside the tensor allow-list, as ``module.name`` strings."""
    return scan_stream(io.BytesIO(data), len(data))


def check_pickle(data: bytes, file: str) -> None:
    """Raises ``UnsafePickleError`` naming the file and the globals unless the pickle
    references tensor types only."""
    _raise_unsafe(lambda: unsafe_globals(data), file)


def check_pickle_file(fh: IO[bytes], size: int, file: str) -> None:
    """``check_pickle`` over an open file, the same scan validate runs."""
    _raise_unsafe(lambda: scan_stream(fh, size), file)


def _raise_unsafe(scan: object, file: str) -> None:
    try:
        bad = scan()  # type: ignore[operator]
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
    """The unsafe globals of the ``.bin`` ``name`` in ``folder`` (``scan_stream``).
    Raises ``UnsafePickleError`` (naming the file) for a corrupt or ambiguous file."""
    size = folder.size(name) if size is None else size
    try:
        head = folder.read_range(name, 0, 512)  # direct: the buffered reader's window goes to the zip directory
        with open_ranged(folder, name, size) as fh:
            return scan_stream(fh, size, head)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}", file=name) from e


def torch_archive_member(zf: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The ``data.pkl`` member torch will load, after checking that the archive is
    unambiguous: torch names the archive after the first member's folder and reads
    ``<archive>/data.pkl``; every other member must be one torch.save writes there."""
    infos = zf.infolist()
    if not infos:
        raise UnsafePickleError("zip archive is empty: not a PyTorch checkpoint")
    first = infos[0].filename
    if "/" not in first:
        raise UnsafePickleError(f"zip member {first!r} is not in an archive folder, as torch requires")
    archive = first.split("/", 1)[0]
    seen: set[str] = set()
    for info in infos:
        if info.filename in seen:
            raise UnsafePickleError(
                f"zip archive holds two members named {info.filename!r}; loaders disagree on which one they read")
        seen.add(info.filename)
        folder, _, rest = info.filename.partition("/")
        if folder != archive or not _TORCH_MEMBER.fullmatch(rest):
            raise UnsafePickleError(
                f"zip member {info.filename!r} is not one torch.save writes in archive {archive!r}/; refusing an archive "
                "whose members could be read differently by other loaders")
    pkl = f"{archive}/data.pkl"
    if pkl not in seen:
        raise UnsafePickleError(f"zip archive has no {pkl}: not a PyTorch checkpoint")
    info = zf.getinfo(pkl)
    if max(info.file_size, info.compress_size) > MAX_PICKLE_BYTES:
        raise UnsafePickleError(f"{pkl} is {info.file_size} bytes, above the {MAX_PICKLE_BYTES} limit")
    return info


def _zip_globals(fh: IO[bytes]) -> list[Global]:
    try:
        with zipfile.ZipFile(fh) as zf:
            info = torch_archive_member(zf)
            with zf.open(info) as member:
                reader = io.BufferedReader(member)  # type: ignore[arg-type]
                found, _value = _run_pickle(reader)
                if reader.read(1):
                    raise UnsafePickleError(f"{info.filename} holds bytes after its pickle; refusing a second payload")
                return found
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as e:
        raise UnsafePickleError(f"corrupt zip archive: {e}") from e


def _legacy_globals(fh: IO[bytes], size: int) -> list[Global]:
    """A bare pickle (then nothing after it), or torch's legacy format: magic number,
    protocol, sys info, the state dict, the storage keys, then raw storages (never
    read: torch reads them as bytes, not pickles)."""
    found, value = _run_pickle(fh)
    if isinstance(value, int) and not isinstance(value, bool) and value == LEGACY_MAGIC:
        for _ in range(LEGACY_PICKLES - 1):
            more, _value = _run_pickle(fh)
            found.extend(more)
        return found
    if fh.tell() < size and fh.read(1):
        raise UnsafePickleError("holds bytes after its pickle; a bare pickle has nothing after STOP, so refusing a hidden payload")
    return found


def extract_pickle(data: bytes) -> bytes:
    """The pickle torch reads from a zip archive, or ``data`` itself for a legacy file."""
    if data[:4] != b"PK\x03\x04":
        return data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.read(torch_archive_member(zf))
    except zipfile.BadZipFile as e:
        raise UnsafePickleError(f"corrupt zip archive: {e}") from e
