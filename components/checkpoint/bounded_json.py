"""The one JSON reader for files that come with a checkpoint.

Python's ``json`` module trusts its input: a few thousand nested brackets raise
``RecursionError``, an integer of 5,000 digits raises ``ValueError`` from the
int-conversion limit, and a 2 GB "config" is read into memory. A checkpoint folder is
untrusted input, so every JSON file the tool reads from one (safetensors headers,
indexes, ``config.json``, ``generation_config.json``, ``tokenizer_config.json``,
``adapter_config.json``, manifests, staging state) goes through ``loads``: the size is
capped before parsing (per file name: a ``config.json`` is kilobytes, a ``tokenizer.json``
tens of megabytes — ``max_bytes_for``), the nesting depth is measured by a linear pre-scan
that runs in C (strings removed by one regular expression, then innermost bracket pairs
removed at most ``max_depth`` times), and integers are refused by their digit count before
``int()`` sees them; a key given twice in one object is refused (Python keeps the last,
other readers the first, so two tools would see two different files). Every failure is
one ``CheckpointError`` naming the file.

The limits protect the parser; they never judge values real producers write. transformers
writes ``"model_max_length": 1000000000000000019884624838656`` (``int(1e30)``, its "no known
limit") into every tokenizer saved without a maximum, so integers are capped in the
thousands of digits (the parse cost), not at what a size "should" be; values that must be
small are checked by the code that reads them (validate's config bounds). The corpus in
``tests/corpus/`` holds what transformers 4 and 5, PEFT, TRL and torchtune write: every
change here runs against it.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

from tune2serve.components.errors import JsonLimitError

if TYPE_CHECKING:
    from tune2serve.components.checkpoint.storage import Folder

MAX_JSON_BYTES = 64 * 1024 * 1024  # any JSON file not in MAX_BYTES_BY_NAME (indexes, state files)
MAX_DEPTH = 64  # real configs nest 4-6 levels; quantization configs ~8
# int() of n digits costs O(n^2); Python itself refuses more than 4300. transformers' own
# "no limit" value int(1e30) has 31 digits, so the cap sits far above every real value.
MAX_INT_DIGITS = 4000
U64_DIGITS = 20  # safetensors headers: offsets and shapes are u64 by the format's definition

_MIB = 1024 * 1024
# Caps per file name, each far above the largest published file of its kind (config.json of
# DeepSeek-V3 with its quantization config: 2 KB; tokenizer_config.json of Gemma-3 with 6,000
# added tokens: 1.2 MB; tokenizer.json of Gemma-3: 33 MB; trainer_state.json with a long
# log_history: a few MB) and far below what makes a parse slow: a 60 MB "config.json" is
# refused from its size before a byte is read.
MAX_BYTES_BY_NAME: dict[str, int] = {
    "config.json": 1 * _MIB,
    "generation_config.json": 1 * _MIB,
    "adapter_config.json": 1 * _MIB,
    "special_tokens_map.json": 4 * _MIB,
    "preprocessor_config.json": 1 * _MIB,
    "processor_config.json": 1 * _MIB,
    "chat_template.json": 4 * _MIB,
    "tokenizer_config.json": 32 * _MIB,
    "added_tokens.json": 32 * _MIB,
    "vocab.json": 64 * _MIB,
    "tokenizer.json": 128 * _MIB,
    "trainer_state.json": 256 * _MIB,
}


def max_bytes_for(name: str) -> int:
    """The size cap of the JSON file ``name`` (a path or a bare name): its own when the
    name is a known kind, ``MAX_JSON_BYTES`` otherwise."""
    return MAX_BYTES_BY_NAME.get(name.rsplit("/", 1)[-1], MAX_JSON_BYTES)

# A JSON string (escapes included) — strings can hold brackets that are not structure.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"\[\]|\{\}")


def _depth_ok(raw: bytes, max_depth: int) -> bool | None:
    """True when brackets nest at most ``max_depth`` deep, False when deeper, None when
    they do not balance (then the JSON is malformed, and saying so is enough)."""
    skeleton = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    for _ in range(max_depth):
        if not skeleton:
            return True
        skeleton, removed = _INNERMOST.subn(b"", skeleton)
        if not removed:
            return None
    if not skeleton:
        return True
    return False if _INNERMOST.search(skeleton) else None


def loads(data: bytes | str, file: str, *, max_bytes: int | None = None, max_depth: int | None = MAX_DEPTH,
          max_int_digits: int = MAX_INT_DIGITS, max_objects: int | None = None) -> Any:
    """The parsed document, or ``JsonLimitError`` naming ``file`` and the limit it broke.

    ``max_bytes`` defaults to the cap for ``file``'s name (``max_bytes_for``).

    ``max_objects`` caps the number of ``{`` (one byte count, before parsing): a
    safetensors header has one object per tensor, so this bounds its parse time and
    memory. Headers pass ``max_depth=None``: their entries are checked one by one, and
    the C parser's own recursion guard (caught here) still stops a bracket bomb.

    Floats that overflow (``1e999``) and the non-standard ``NaN``/``Infinity`` parse as
    Python floats; values that must be finite are checked by the model that reads them.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if max_bytes is None:
        max_bytes = max_bytes_for(file)
    if len(raw) > max_bytes:
        raise JsonLimitError(
            f"{file}: {len(raw)} bytes is above the {max_bytes}-byte limit for this JSON file; "
            "it is not a real configuration file", file=file)
    if max_objects is not None and raw.count(b"{") > max_objects:
        raise JsonLimitError(f"{file}: holds more than {max_objects} JSON objects, above the limit for this file", file=file)
    depth = _depth_ok(raw, max_depth) if max_depth is not None else True
    if depth is False:
        raise JsonLimitError(f"{file}: JSON nests deeper than {max_depth} levels; no configuration file does", file=file)
    if depth is None:
        raise JsonLimitError(f"{file}: not valid JSON (brackets do not balance)", file=file)

    def parse_int(text: str) -> int:
        if len(text.lstrip("-")) > max_int_digits:
            raise JsonLimitError(
                f"{file}: integer of {len(text)} digits ({text[:12]}…) is above the {max_int_digits}-digit limit", file=file)
        return int(text)

    def parse_float(text: str) -> float:
        if len(text) > 64:
            raise JsonLimitError(f"{file}: number of {len(text)} characters ({text[:12]}…) is not a real value", file=file)
        return float(text)

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        doc = dict(pairs)
        if len(doc) != len(pairs):
            seen: set[str] = set()
            dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise JsonLimitError(
                f"{file}: key {dup!r} appears twice in one object; readers disagree on which one counts", file=file)
        return doc

    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_int=parse_int, parse_float=parse_float, object_pairs_hook=unique_keys)
    except JsonLimitError:
        raise
    except UnicodeDecodeError as e:
        raise JsonLimitError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})", file=file) from e
    except RecursionError as e:
        raise JsonLimitError(f"{file}: JSON nests too deep to parse; no configuration file does", file=file) from e
    except (json.JSONDecodeError, ValueError) as e:
        raise JsonLimitError(f"{file}: not valid JSON: {e}", file=file) from e


def load_object(data: bytes | str, file: str, **limits: int) -> dict[str, Any]:
    """``loads`` for files that must be a JSON object (every config file)."""
    doc = loads(data, file, **limits)
    if not isinstance(doc, dict):
        raise JsonLimitError(f"{file}: must be a JSON object, found {type(doc).__name__}", file=file)
    return doc


def is_number(value: object) -> bool:
    """True for an int or a float, not a bool (JSON's numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """True for an int or a finite float (not a bool): what a rank or alpha must be. Ints
    are finite however long (``math.isfinite`` of a 400-digit int raises OverflowError)."""
    return is_number(value) and (isinstance(value, int) or math.isfinite(value))  # type: ignore[arg-type]


def read_json(folder: Folder, name: str, *, max_bytes: int | None = None, **limits: Any) -> Any:
    """``loads`` of ``name`` in ``folder``, its size checked before a byte moves (a
    2 GB "config.json" is refused from the listing, not read). Messages name the file's
    full URI."""
    if max_bytes is None:
        max_bytes = max_bytes_for(name)
    label = folder.join(name)
    size = folder.size(name)
    if size > max_bytes:
        raise JsonLimitError(
            f"{label}: {size} bytes is above the {max_bytes}-byte limit for this JSON file; "
            "it is not a real configuration file", file=name)
    try:
        return loads(folder.read_bytes(name), label, max_bytes=max_bytes, **limits)
    except JsonLimitError as e:
        raise JsonLimitError(str(e), file=name) from e


def read_object(folder: Folder, name: str, **limits: Any) -> dict[str, Any]:
    """``read_json`` for files that must be a JSON object (every config file)."""
    doc = read_json(folder, name, **limits)
    if not isinstance(doc, dict):
        raise JsonLimitError(f"{folder.join(name)}: must be a JSON object, found {type(doc).__name__}", file=name)
    return doc
