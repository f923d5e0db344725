"""Index ↔ shards ↔ tensors, and every safetensors header's layout.

Why each rule: vLLM and transformers load a sharded checkpoint through the index, so an
entry that names a missing shard, a shard that lacks the tensor, or a tensor no entry
names makes the load fail (after the GPUs are provisioned). Headers are read with two
ranged reads per shard; the tensor data is never read.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from tune2serve.components.checkpoint.index import inspect_index
from tune2serve.components.checkpoint.safetensors_header import HeaderInspection, inspect_header
from tune2serve.components.validate.context import Checkpoint
from tune2serve.components.validate.findings import Finding, error, warning

MAX_LISTED = 5  # names quoted in one grouped finding


def check_weights(ckpt: Checkpoint) -> list[Finding]:
    found = _read_headers(ckpt)
    found += _duplicates(ckpt)
    if ckpt.weights.safetensors_index and ckpt.sizes.get(ckpt.weights.safetensors_index):
        found += _safetensors_index(ckpt, ckpt.weights.safetensors_index)
    if ckpt.weights.bin_index and ckpt.sizes.get(ckpt.weights.bin_index):
        found += _bin_index(ckpt, ckpt.weights.bin_index)
    ckpt.summary["shards"] = len(ckpt.weights.safetensors) or len(ckpt.weights.bins)
    ckpt.summary["tensors"] = len(ckpt.tensors)
    return found


def _read_headers(ckpt: Checkpoint) -> list[Finding]:
    names = [n for n in ckpt.weights.safetensors if ckpt.sizes.get(n)]  # empty files: reported already

    def inspect(name: str) -> HeaderInspection:
        return inspect_header(ckpt.folder, name, ckpt.sizes[name])

    # As many headers at once as the folder says reads are worth (remote reads are
    # latency-bound; local reads are not).
    workers = min(ckpt.folder.parallel_reads(), len(names))
    if workers < 2:
        results = [inspect(n) for n in names]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(inspect, names))
    found: list[Finding] = []
    for name, result in zip(names, results):
        if result.header is None:
            assert result.failure is not None
            found.append(error(result.failure.code, result.failure.message, name))
            continue
        ckpt.headers[name] = result.header
        by_code: dict[str, list[str]] = {}
        for issue in result.header.issues:
            by_code.setdefault(issue.code, []).append(issue.message)
        for code, messages in by_code.items():
            more = f" (and {len(messages) - MAX_LISTED} more)" if len(messages) > MAX_LISTED else ""
            found.append(error(code, f"{name}: " + "; ".join(messages[:MAX_LISTED]) + more, name))
    return found


def _duplicates(ckpt: Checkpoint) -> list[Finding]:
    """Fills ``ckpt.tensors`` (first occurrence wins) and reports tensors in two shards."""
    dup: dict[str, list[str]] = {}
    for name, header in ckpt.headers.items():
        for tensor, info in header.tensors.items():
            if tensor in ckpt.tensor_files:
                dup.setdefault(name, []).append(f"{tensor!r} (also in {ckpt.tensor_files[tensor]})")
                continue
            ckpt.tensors[tensor] = info
            ckpt.tensor_files[tensor] = name
    return [error("duplicate-tensor", f"{name} holds tensors another shard holds too: {_listed(items)}; "
                                      "the loader would keep either copy", name)
            for name, items in dup.items()]


def _safetensors_index(ckpt: Checkpoint, index_name: str) -> list[Finding]:
    index, problems = inspect_index(ckpt.folder, index_name)
    found = [error(p.code, p.message, index_name) for p in problems]
    if index is None:
        return found
    ckpt.index = index
    missing_shards = []
    for shard in index.shards:
        if shard.endswith(".bin"):
            found.append(error("index-bin-shard", f"{index_name} maps tensors to {shard!r}, a .bin file; a safetensors "
                                                  "index may name .safetensors shards only", index_name))
        elif shard not in ckpt.sizes:
            missing_shards.append(shard)
            found.append(error("index-missing-shard", f"{index_name} names {shard!r}, which is not in the folder "
                                                      "(upload it or rewrite the index)", shard))
    not_in_shard: dict[str, list[str]] = {}
    for tensor, shard in index.weight_map.items():
        header = ckpt.headers.get(shard)
        if header is not None and tensor not in header.tensors:
            not_in_shard.setdefault(shard, []).append(tensor)
    for shard, tensors in not_in_shard.items():
        found.append(error("index-tensor-not-in-shard", f"{index_name} says {shard} holds {_listed(tensors)}, "
                                                        "but its header has no such tensor", shard))
    for shard, header in ckpt.headers.items():
        extra = [t for t in header.tensors if t not in index.weight_map]
        if extra:
            found.append(error("shard-tensor-not-in-index", f"{shard} holds {_listed(extra)}, which {index_name} does not "
                                                            "list; the loader would never read them", shard))
    unindexed = sorted(set(ckpt.weights.safetensors) - set(index.shards))
    for shard in unindexed:
        found.append(warning("unindexed-shard", f"{shard} is not named in {index_name}; the server ignores it", shard))
    if (index.total_size is not None and not found and len(ckpt.headers) == len(index.shards)
            and not missing_shards):
        data = sum(t.nbytes for h in ckpt.headers.values() for t in h.tensors.values())
        if data != index.total_size:
            found.append(warning("index-total-size", f"{index_name} declares total_size {index.total_size} but the "
                                                     f"shards hold {data} bytes of tensors", index_name))
    return found


def _bin_index(ckpt: Checkpoint, index_name: str) -> list[Finding]:
    index, problems = inspect_index(ckpt.folder, index_name)
    found = [error(p.code, p.message, index_name) for p in problems]
    for shard in index.shards if index else []:
        if shard not in ckpt.sizes:
            found.append(error("index-missing-shard", f"{index_name} names {shard!r}, which is not in the folder", shard))
    return found


def _listed(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(repr(i) if not i.endswith(")") else i for i in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")
