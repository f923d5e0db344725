"""Reads a PyTorch ``.bin`` state dict without ever running untrusted pickle code.

Order matters: ``check_pickle`` scans the pickle's globals first (only the ``data.pkl``
member of the zip archive is read into memory, never the tensor storages), and only a
pickle that names tensor types alone is handed to ``torch.load(weights_only=True)``,
memory-mapped so that the tensors stay on disk until they are used.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from tune2serve.components.checkpoint.pickle_scan import MAX_PICKLE_BYTES, check_pickle
from tune2serve.components.errors import CheckpointError, UnsafePickleError


def _pickle_bytes(path: Path, name: str) -> bytes:
    """The pickle stream of a torch zip archive (just ``data.pkl``), or the whole file
    for a legacy bare pickle (bounded by the scanner's size limit)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not members:
                    raise UnsafePickleError(f"{name}: zip archive has no data.pkl: not a PyTorch checkpoint", file=name)
                info = zf.getinfo(members[0])
                if info.file_size > MAX_PICKLE_BYTES:
                    raise UnsafePickleError(f"{name}: data.pkl is {info.file_size} bytes, above the {MAX_PICKLE_BYTES} limit", file=name)
                return zf.read(members[0])
        except zipfile.BadZipFile as e:
            raise UnsafePickleError(f"{name}: corrupt zip archive ({e}); re-save or re-upload the file", file=name) from e
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise UnsafePickleError(f"{name}: legacy pickle above {MAX_PICKLE_BYTES} bytes; re-save it with torch.save", file=name)
    return path.read_bytes()


def load_state_dict(path: Path, name: str) -> dict[str, Any]:
    """``{tensor name: torch.Tensor}`` from a ``.bin`` file, scanned first.

    Raises ``UnsafePickleError`` naming the file and the offending globals, and
    ``CheckpointError`` when the file does not hold a flat dict of tensors.
    """
    import torch

    check_pickle(_pickle_bytes(path, name), name)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy format: no mmap
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError on bad files
        raise CheckpointError(f"{name}: cannot be read as a PyTorch state dict ({type(e).__name__}: {e})", file=name) from e
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{name}: is not a flat {{name: tensor}} state dict; re-save it with model.state_dict()", file=name)
    return state
