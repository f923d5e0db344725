"""Reads safetensors headers with two ranged reads, never the tensor data.

A safetensors file is ``u64 little-endian N`` + ``N`` bytes of JSON + the data buffer.
The JSON maps tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the data buffer) plus an optional ``__metadata__`` of strings.
Everything here works from a ``Folder`` so it costs the same on local disk and GCS.

Two entry points: ``inspect_header`` never raises for a bad file (validate turns what
it finds into findings, each with a stable code), ``read_header`` raises
``CheckpointError`` when the header cannot be parsed at all (what export wants).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.checkpoint.storage import Folder
from tune2serve.components.errors import CheckpointError

# safetensors itself refuses headers above 100 MB; a real 70B shard header is ~60 KB.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# The largest real shards hold a few thousand tensors; a million-entry header costs
# seconds and a gigabyte to parse, so the entry count is capped (one byte count) first.
MAX_TENSORS_PER_FILE = 200_000
U64_MAX = 2**64 - 1

# Bytes per element. F8 variants are native FP8 (DeepSeek-V3/R1); F4 and E8M0 appear
# in MXFP4 checkpoints (gpt-oss packs them as U8 blocks + scales).
DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75,
}
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
FP8_DTYPES = {"F8_E5M2", "F8_E4M3", "F8_E8M0"}

# Stable codes of what can be wrong with a header (validate's finding codes).
HEADER_TOO_SHORT = "header-too-short"
HEADER_LENGTH_INVALID = "header-length-invalid"
HEADER_NOT_JSON = "header-not-json"
HEADER_NOT_OBJECT = "header-not-object"
HEADER_BAD_METADATA = "header-bad-metadata"
HEADER_BAD_ENTRY = "header-bad-entry"
HEADER_UNKNOWN_DTYPE = "header-unknown-dtype"
HEADER_BAD_SHAPE = "header-bad-shape"
HEADER_BAD_OFFSETS = "header-bad-offsets"
HEADER_OFFSETS_OUT_OF_BOUNDS = "header-offsets-out-of-bounds"
HEADER_SIZE_MISMATCH = "header-size-mismatch"
HEADER_OVERLAP = "header-overlap"
HEADER_FILE_SIZE = "header-file-size"
HEADER_GAP = "header-gap"
HEADER_TOO_MANY_TENSORS = "header-too-many-tensors"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class HeaderProblem:
    """One thing wrong with a header: a stable ``code`` and a message naming the tensor."""

    code: str
    message: str


@dataclass
class SafetensorsHeader:
    """The parsed header of one file. ``problems`` lists what is wrong with its layout
    (empty when the file is sound); parsing fails only when nothing can be read.
    ``issues`` holds the same problems with their codes."""

    file: str
    file_size: int
    header_size: int
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    issues: list[HeaderProblem] = field(default_factory=list)

    @property
    def data_size(self) -> int:
        return self.file_size - 8 - self.header_size

    def add_problem(self, code: str, message: str) -> None:
        self.issues.append(HeaderProblem(code, message))
        self.problems.append(message)


@dataclass(frozen=True)
class HeaderInspection:
    """What ``inspect_header`` found: a header (possibly with problems), or the reason
    no header could be parsed (``failure``)."""

    header: SafetensorsHeader | None
    failure: HeaderProblem | None = None


def inspect_header(folder: Folder, name: str, file_size: int | None = None) -> HeaderInspection:
    """Parses ``name``'s header with at most two ranged reads; never raises for a bad
    file (storage errors still raise ``SourceError``)."""
    size = folder.size(name) if file_size is None else file_size
    if size < 8:
        return _fail(HEADER_TOO_SHORT, f"{name}: {size} bytes is too short for a safetensors file (needs an 8-byte header length)")
    prefix = folder.read_range(name, 0, 8)
    if len(prefix) < 8:
        return _fail(HEADER_TOO_SHORT, f"{name}: truncated before the header length")
    header_size = int.from_bytes(prefix, "little")
    if header_size > MAX_HEADER_BYTES:
        return _fail(
            HEADER_LENGTH_INVALID,
            f"{name}: header length {header_size} exceeds the {MAX_HEADER_BYTES}-byte limit; the file is corrupt or not safetensors",
        )
    if 8 + header_size > size:
        return _fail(
            HEADER_LENGTH_INVALID,
            f"{name}: header length {header_size} runs past the end of the {size}-byte file (truncated upload?)",
        )
    raw = folder.read_range(name, 8, header_size)
    if len(raw) != header_size:
        return _fail(HEADER_TOO_SHORT, f"{name}: header truncated ({len(raw)} of {header_size} bytes)")
    if raw.count(b"{") > MAX_TENSORS_PER_FILE + 2:
        return _fail(HEADER_TOO_MANY_TENSORS,
                     f"{name}: header holds more than {MAX_TENSORS_PER_FILE} entries; no real shard does (split the file)")
    try:
        doc = bounded_json.loads(raw.rstrip(b" "), name, max_bytes=MAX_HEADER_BYTES, max_depth=None,
                                 max_int_digits=bounded_json.U64_DIGITS)
    except bounded_json.JsonLimitError as e:
        return _fail(HEADER_NOT_JSON, f"{name}: header is not valid JSON: {str(e).removeprefix(name + ': ')}")
    if not isinstance(doc, dict):
        return _fail(HEADER_NOT_OBJECT, f"{name}: header is JSON but not an object (found {type(doc).__name__})")
    header = SafetensorsHeader(file=name, file_size=size, header_size=header_size)
    _parse_entries(header, doc)
    _check_layout(header)
    return HeaderInspection(header)


def read_header(folder: Folder, name: str, file_size: int | None = None) -> SafetensorsHeader:
    """Parses ``name``'s header with ranged reads and checks its layout.

    Raises ``CheckpointError`` (naming the file) when the header cannot be parsed at all:
    shorter than 8 bytes, a length that is absurd or past the end, JSON that does not
    parse. Layout problems in a parseable header are returned in ``problems``.
    """
    found = inspect_header(folder, name, file_size)
    if found.header is None:
        assert found.failure is not None
        raise CheckpointError(found.failure.message, file=name)
    return found.header


def _fail(code: str, message: str) -> HeaderInspection:
    return HeaderInspection(None, HeaderProblem(code, message))


def _is_dim(d: object) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= U64_MAX


def _parse_entries(header: SafetensorsHeader, doc: dict[str, object]) -> None:
    for key, entry in doc.items():
        if key == "__metadata__":
            if isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values()):
                header.metadata = dict(entry)
            else:
                header.add_problem(HEADER_BAD_METADATA, "__metadata__ must map strings to strings")
            continue
        if not isinstance(entry, dict):
            header.add_problem(HEADER_BAD_ENTRY, f"tensor {key!r}: entry is not an object")
            continue
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            header.add_problem(HEADER_UNKNOWN_DTYPE, f"tensor {key!r}: unknown dtype {dtype!r}")
            continue
        if not (isinstance(shape, list) and len(shape) <= 16 and all(_is_dim(d) for d in shape)
                and math.prod(shape) <= U64_MAX):
            header.add_problem(HEADER_BAD_SHAPE, f"tensor {key!r}: shape {shape!r} is not a list of non-negative integers")
            continue
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_dim(o) for o in offsets)):
            header.add_problem(HEADER_BAD_OFFSETS, f"tensor {key!r}: data_offsets {offsets!r} is not [begin, end]")
            continue
        begin, end = offsets
        header.tensors[key] = TensorInfo(key, dtype, tuple(shape), begin, end)


def _check_layout(header: SafetensorsHeader) -> None:
    """Offsets inside the buffer, spans matching shape × dtype, and the buffer exactly
    covered: the first tensor at 0, each next one where the previous ended (no gap, no
    overlap), the last ending at the end of the file. These are the rules safetensors
    enforces on load (its ``validate`` refuses a gap as "metadata incomplete buffer"),
    checked without loading: bytes hidden in a gap are bytes no reader checks."""
    data_size = header.data_size
    spans = []
    for t in header.tensors.values():
        if t.end < t.begin:
            header.add_problem(HEADER_BAD_OFFSETS, f"tensor {t.name!r}: data_offsets end {t.end} is before begin {t.begin}")
            continue
        if t.end > data_size:
            header.add_problem(
                HEADER_OFFSETS_OUT_OF_BOUNDS,
                f"tensor {t.name!r}: data_offsets [{t.begin}, {t.end}] run past the end of the data ({data_size} bytes)",
            )
        expected = t.numel * DTYPE_BYTES[t.dtype]
        if expected != t.nbytes:
            header.add_problem(
                HEADER_SIZE_MISMATCH,
                f"tensor {t.name!r}: shape {list(t.shape)} × {t.dtype} needs {expected:g} bytes but data_offsets span {t.nbytes}",
            )
        spans.append((t.begin, t.end, t.name))
    spans.sort()
    covered = 0
    overlapped = False  # a moved tensor overlaps one and leaves a hole: report the cause once
    for begin, end, tname in spans:
        if begin < covered:
            header.add_problem(HEADER_OVERLAP, f"tensor {tname!r}: bytes [{begin}, {end}] overlap the previous tensor")
            overlapped = True
        elif begin > covered and not overlapped:
            header.add_problem(
                HEADER_GAP,
                f"tensor {tname!r}: starts at byte {begin} but the previous tensor ends at {covered}: "
                f"{begin - covered} bytes in between belong to no tensor (safetensors refuses such files)",
            )
        covered = max(covered, end)
    if not header.problems and covered != data_size:
        header.add_problem(
            HEADER_FILE_SIZE,
            f"file size {header.file_size} ≠ header ({8 + header.header_size}) + tensor data ({covered}): "
            "the file is truncated or has trailing bytes",
        )
