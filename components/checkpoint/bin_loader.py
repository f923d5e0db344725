"""Reads a PyTorch ``.bin`` state dict without ever running untrusted pickle code.

Order matters: ``check_pickle_file`` scans the pickle's globals first (the same scan as
validate's: only the ``data.pkl`` member torch reads, never the tensor storages), and only a
pickle that names tensor types alone is handed to ``torch.load(weights_only=True)``,
memory-mapped so that the tensors stay on disk until they are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tune2serve.components.checkpoint.pickle_scan import check_pickle_file
from tune2serve.components.errors import CheckpointError


def load_state_dict(path: Path, name: str) -> dict[str, Any]:
    """``{tensor name: torch.Tensor}`` from a ``.bin`` file, scanned first.

    Raises ``UnsafePickleError`` naming the file and the offending globals, and
    ``CheckpointError`` when the file does not hold a flat dict of tensors.
    """
    import torch

    with open(path, "rb") as fh:
        check_pickle_file(fh, path.stat().st_size, name)
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
