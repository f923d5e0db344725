"""``.bin`` weights: scanned, never unpickled.

Each ``.bin`` is read through ranged reads: a zip archive's central directory and its
``data.pkl`` member, or a legacy file's leading pickles; never the tensor storages. Any
global other than the tensor-rebuilding ones makes the file unsafe to load.
"""

from __future__ import annotations

from tune2serve.components.checkpoint.pickle_scan import scan_folder_file
from tune2serve.components.errors import UnsafePickleError
from tune2serve.components.validate.context import Checkpoint
from tune2serve.components.validate.findings import Finding, error


def check_pickles(ckpt: Checkpoint) -> list[Finding]:
    found: list[Finding] = []
    for name in ckpt.weights.bins:
        if not ckpt.sizes.get(name):
            continue  # empty: reported by the files check
        try:
            bad = scan_folder_file(ckpt.folder, name, ckpt.sizes[name])
        except UnsafePickleError as e:
            found.append(error("pickle-corrupt", f"{e}; it was not loaded", name))
            continue
        if bad:
            found.append(error("unsafe-pickle", f"{name}: the pickle references {', '.join(bad)}, which a plain tensor "
                                                "checkpoint never does; it was not loaded. Re-save the weights as "
                                                "safetensors from a trusted environment", name))
    return found
