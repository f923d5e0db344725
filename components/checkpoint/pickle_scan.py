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


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) a pickle stream would import, in order of appearance."""
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    try:
        for opcode, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif opcode.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                found.append((module, name))
            elif opcode.name == "STACK_GLOBAL":
                if len(strings) < 2:
                    found.append(("?", "?"))
                else:
                    found.append((strings[-2], strings[-1]))
            elif opcode.name in ("INST", "OBJ"):
                found.append(("?", str(arg)))
    except Exception as e:  # pickletools raises ValueError and others on garbage
        raise UnsafePickleError(f"the pickle stream does not parse ({e}); it is corrupt or not a PyTorch checkpoint") from e
    return found


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
