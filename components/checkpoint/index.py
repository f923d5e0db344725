"""The weights index (``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``)
and the discovery of which weight files a folder holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.checkpoint.storage import Folder, ObjectInfo, check_relative_name
from tune2serve.components.checkpoint.training_state import is_training_state
from tune2serve.components.errors import CheckpointError, SourceReadError

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
SINGLE_SAFETENSORS = "model.safetensors"
SINGLE_BIN = "pytorch_model.bin"


@dataclass
class WeightIndex:
    """``weight_map``: tensor name → shard file name, plus the declared total size."""

    file: str
    weight_map: dict[str, str] = field(default_factory=dict)
    total_size: int | None = None

    @property
    def shards(self) -> list[str]:
        return sorted(set(self.weight_map.values()))


@dataclass(frozen=True)
class IndexProblem:
    """One thing wrong with an index: a stable ``code`` (validate's finding code), the
    message, and the tensor it concerns (None for the whole file)."""

    code: str
    message: str
    tensor: str | None = None


INDEX_INVALID = "index-invalid"
# A 1T-parameter model's index is ~10 MB (a few hundred thousand tensor names).
MAX_INDEX_BYTES = 64 * 1024 * 1024
INDEX_PATH_OUTSIDE = "index-path-outside"


def inspect_index(folder: Folder, name: str) -> tuple[WeightIndex | None, list[IndexProblem]]:
    """Parses an index without raising for bad content: returns the index (entries that
    point outside the folder or are not file names are left out) and what was wrong.
    The index is None when the file is not ``{"weight_map": {...}}`` at all."""
    try:
        doc = bounded_json.loads(folder.read_bytes(name), name, max_bytes=MAX_INDEX_BYTES)
    except bounded_json.JsonLimitError as e:
        return None, [IndexProblem(INDEX_INVALID, str(e))]
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        return None, [IndexProblem(INDEX_INVALID, f"{name}: has no \"weight_map\" object mapping tensor names to shard files")]
    index = WeightIndex(file=name)
    problems: list[IndexProblem] = []
    total = doc.get("metadata", {}).get("total_size") if isinstance(doc.get("metadata"), dict) else None
    in_range = bounded_json.is_finite_number(total) and 0 <= total < 2**64  # type: ignore[operator]
    index.total_size = int(total) if in_range else None  # type: ignore[arg-type]
    if bounded_json.is_number(total) and not in_range:
        problems.append(IndexProblem(INDEX_INVALID, f"{name}: metadata.total_size {str(total)[:24]} is not a byte count"))
    if not doc["weight_map"]:
        problems.append(IndexProblem(INDEX_INVALID, f"{name}: weight_map names no tensors"))
    for tensor, shard in doc["weight_map"].items():
        if not isinstance(shard, str):
            problems.append(IndexProblem(INDEX_INVALID, f"{name}: weight_map[{tensor!r}] is {shard!r}, not a file name", tensor))
            continue
        try:
            check_relative_name(shard, folder.uri)
        except SourceReadError:
            problems.append(IndexProblem(
                INDEX_PATH_OUTSIDE,
                f"{name}: weight_map[{tensor!r}] = {shard!r} points outside the checkpoint folder; "
                "shard names must be plain relative names such as 'model-00001-of-00002.safetensors'",
                tensor,
            ))
            continue
        index.weight_map[tensor] = shard
    return index, problems


def parse_index(folder: Folder, name: str) -> WeightIndex:
    """Parses an index file; raises ``CheckpointError`` naming the file for anything
    that is not ``{"weight_map": {str: relative-file-name}}``."""
    index, problems = inspect_index(folder, name)
    if problems:
        raise CheckpointError(problems[0].message, file=name)
    assert index is not None
    return index


@dataclass(frozen=True)
class WeightFiles:
    """What weights a folder holds at its top level: the index (if any) and the files."""

    safetensors: list[str]
    bins: list[str]
    safetensors_index: str | None
    bin_index: str | None


def find_weight_files(listing: list[ObjectInfo]) -> WeightFiles:
    top = [o.name for o in listing if "/" not in o.name]
    return WeightFiles(
        safetensors=sorted(n for n in top if n.endswith(".safetensors")),
        bins=sorted(n for n in top if n.endswith(".bin") and not is_training_state(n)),
        safetensors_index=SAFETENSORS_INDEX if SAFETENSORS_INDEX in top else next(
            (n for n in top if n.endswith(".safetensors.index.json")), None),
        bin_index=BIN_INDEX if BIN_INDEX in top else next((n for n in top if n.endswith(".bin.index.json")), None),
    )
