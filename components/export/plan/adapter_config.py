"""The typed check of ``adapter_config.json`` values, before any merge.

``LoraOptions.from_config`` used to coerce what it found (``int(doc["r"])``,
``bool("false")`` is True, a pattern key is a regular expression run by ``re``), so a
rank of 0 divided by zero, a NaN ``lora_alpha`` merged into garbage weights that then
passed validate, and a pattern such as ``(a+)+$`` hung export in catastrophic
backtracking. Here every value the merge reads is checked for its type and range,
each failure naming the file and the key; pattern keys are compiled and matched with
a time limit by the one helper for user patterns (``components/user_input.py``: the
``regex`` engine, ``timeout=``).
"""

from __future__ import annotations

import math
from typing import Any

from tune2serve.components import user_input
from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.errors import MergeError

MAX_RANK = 65_536
MAX_PATTERN_CHARS = 512
MATCH_TIMEOUT_S = 0.25  # a module name is < 200 characters; a real pattern matches in microseconds
# |alpha / r| above this overflows bf16 once multiplied by any non-trivial B @ A.
MAX_ABS_SCALING = 1e4


def _number(value: object) -> bool:
    return bounded_json.is_finite_number(value)


def _rank(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_RANK


def _compile(key: object, file: str, where: str) -> user_input.Pattern:
    if not isinstance(key, str) or not key or len(key) > MAX_PATTERN_CHARS:
        raise MergeError(f"{file}: {where} key {str(key)[:40]!r} must be a module-name pattern of 1 to "
                         f"{MAX_PATTERN_CHARS} characters", file=file)
    try:  # PEFT's get_pattern_key: the pattern matches the end of a dotted module name
        return user_input.compile_pattern(key, template=r"(.*\.)?({})$", max_chars=MAX_PATTERN_CHARS)
    except user_input.BadPattern as e:
        raise MergeError(f"{file}: {where} key {key!r}: {e}", file=file) from e


def check_values(doc: dict[str, Any], file: str) -> None:
    """Raises ``MergeError`` naming ``file`` and the key for any value the merge cannot
    use as it stands: ``r`` and ``rank_pattern`` values positive integers, ``lora_alpha``
    and ``alpha_pattern`` values finite numbers with a finite, bounded scaling, the
    boolean switches JSON booleans, pattern keys valid regular expressions."""
    r = doc.get("r")
    if not _rank(r):
        raise MergeError(f"{file}: r = {r!r} must be a positive integer (at most {MAX_RANK})", file=file)
    alpha = doc.get("lora_alpha", 8)
    if not _number(alpha):
        raise MergeError(f"{file}: lora_alpha = {alpha!r} must be a finite number", file=file)
    for key in ("use_rslora", "use_dora", "fan_in_fan_out"):
        if key in doc and doc[key] is not None and not isinstance(doc[key], bool):
            raise MergeError(f"{file}: {key} = {doc[key]!r} must be true or false", file=file)
    for where, ok, what in (("rank_pattern", _rank, "a positive integer"), ("alpha_pattern", _number, "a finite number")):
        patterns = {} if doc.get(where) is None else doc[where]
        if not isinstance(patterns, dict):
            raise MergeError(f"{file}: {where} must be an object mapping module patterns to values", file=file)
        for key, value in patterns.items():
            _compile(key, file, where)
            if not ok(value):
                raise MergeError(f"{file}: {where}[{key!r}] = {value!r} must be {what}", file=file)
    modules = doc.get("modules_to_save")
    if modules is not None and not (isinstance(modules, list) and all(isinstance(m, str) for m in modules)):
        raise MergeError(f"{file}: modules_to_save must be a list of module names", file=file)
    base = doc.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise MergeError(f"{file}: base_model_name_or_path must be a string", file=file)
    ranks = [r, *(doc.get("rank_pattern") or {}).values()]
    alphas = [alpha, *(doc.get("alpha_pattern") or {}).values()]
    worst = max(abs(a) for a in alphas) / min(math.sqrt(x) if doc.get("use_rslora") else x for x in ranks)
    if worst > MAX_ABS_SCALING:
        raise MergeError(f"{file}: lora_alpha / r reaches {worst:g}, above {MAX_ABS_SCALING:g}; the merged weights "
                         "would overflow. Check lora_alpha and alpha_pattern", file=file)


def pattern_value(patterns: dict[str, Any], module: str, default: Any, file: str = "adapter_config.json") -> Any:
    """PEFT's ``get_pattern_key``: the first pattern matching the end of ``module``,
    each match bounded in time (``MergeError`` naming the pattern when it runs over)."""
    for key, value in patterns.items():
        try:
            if _compile(key, file, "pattern").match(module, timeout_s=MATCH_TIMEOUT_S):
                return value
        except user_input.PatternTimeout as e:
            raise MergeError(f"{file}: pattern {key!r} takes more than {MATCH_TIMEOUT_S} s to match {module!r} "
                             "(catastrophic backtracking); write it as a plain module name or a simple regex",
                             file=file) from e
    return default
