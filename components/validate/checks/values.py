"""``--scan-values``: every floating tensor of every safetensors file streamed and
checked for NaN/Inf (off by default: validate otherwise reads headers only). A file
with a non-finite value is an error naming the file and the first such tensor; an
export's own merge already refuses to write one (``export/finite.py``), so this is for
folders that did not come from export."""

from __future__ import annotations

from tune2serve.components.checkpoint.safetensors_header import FLOAT_DTYPES
from tune2serve.components.validate.context import Checkpoint
from tune2serve.components.validate.findings import Finding, error

CHUNK_BYTES = 64 << 20
_TORCH = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def check_values(ckpt: Checkpoint) -> list[Finding]:
    if not ckpt.options.scan_values:
        return []
    import torch

    found: list[Finding] = []
    for file, header in sorted(ckpt.headers.items()):
        if header.problems:
            continue  # the layout is already an error; its bytes mean nothing
        base = 8 + header.header_size
        for t in sorted(header.tensors.values(), key=lambda t: t.begin):
            if t.dtype not in FLOAT_DTYPES or t.nbytes == 0:
                continue
            dtype = getattr(torch, _TORCH[t.dtype])
            step = CHUNK_BYTES - CHUNK_BYTES % torch.tensor([], dtype=dtype).element_size()
            bad = 0
            for start in range(t.begin, t.end, step):
                data = ckpt.folder.read_range(file, base + start, min(step, t.end - start))
                bad += int((~torch.isfinite(torch.frombuffer(bytearray(data), dtype=dtype))).sum())
            if bad:
                found.append(error("non-finite-weights", f"{file}: tensor {t.name} holds {bad} NaN/Inf values; a model "
                                                         "with them answers garbage. Re-export from a sound checkpoint",
                                   file))
                break
    return found
