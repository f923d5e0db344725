"""The documented range of every numeric flag and pipeline parameter, and the one
checker of it.

Why one table: a number reaches tune2serve by three doors — a CLI flag (argparse
``type=``), a pipeline parameter (a step's entry function, or ``submit``/``run`` before
anything is sent) and a Python call — and a NaN slips through every comparison
(``nan < 0`` is false), an ``inf`` bakes forever, a ``0`` that secretly meant "default"
hides a typo. Each ``Number`` says what is allowed once; the flag's ``--help``, the
parameter's description in the Vertex AI UI and the refusal are all written from it, so
they cannot drift apart. A value outside its range is a usage error (exit 2) naming the
flag or the parameter, raised before any API call.

Standard library only: the CLI imports this at parse time.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from tune2serve.components.errors import UsageError

_INTEGER = re.compile(r"^[+-]?[0-9]{1,18}$")
_SHOWN = 40  # characters of a refused value quoted back


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Number:
    """A numeric flag / pipeline parameter: finite, in ``[low, high]`` (ends open where
    said), a whole number when ``integer``, one of ``choices`` when given. ``zero``, when
    set, documents what 0 means where 0 is accepted outside the range (a pipeline
    parameter's "not given": KFP has no None)."""

    flag: str
    param: str | None
    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    high_open: bool = False
    unit: str = ""
    choices: tuple[int, ...] = ()
    zero: str = ""

    def describe(self) -> str:
        """The range in words, as ``--help`` and the parameter's description show it."""
        if self.choices:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            low = f"above {_fmt(self.low)}" if self.low_open else f"from {_fmt(self.low)}"
            high = f"below {_fmt(self.high)}" if self.high_open else f"at most {_fmt(self.high)}"
            joined = f"from {_fmt(self.low)} to {_fmt(self.high)}" if not (self.low_open or self.high_open) \
                else f"{low}, {high}"
            text = f"{'a whole number' if self.integer else 'a number'} {joined}"
        text += f" ({self.unit})" if self.unit else ""
        return text + (f"; or 0: {self.zero}" if self.zero else "")

    def help(self, text: str) -> str:
        """``text`` with the range appended (for argparse ``help=``; no bare %)."""
        return f"{text} [{self.describe()}]"

    def or_zero(self, meaning: str) -> Number:
        """This range, also accepting 0 with ``meaning`` (a pipeline parameter's "none")."""
        return replace(self, zero=meaning)

    def problem(self, value: Any, text: str | None = None) -> str:
        """Why ``value`` is refused ("" when it is fine); ``text``: what the user wrote."""
        shown = _shown(value if text is None else text)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{shown} is not {self.describe()}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{shown} is not a finite number; expected {self.describe()}"
        if self.zero and value == 0:
            return ""
        if self.integer and not float(value).is_integer():
            return f"{shown} is not a whole number; expected {self.describe()}"
        if self.choices:
            ok = value in self.choices
        else:
            ok = (self.low < value if self.low_open else self.low <= value) and (
                value < self.high if self.high_open else value <= self.high)
        return "" if ok else f"{shown} is out of range; expected {self.describe()}"

    def from_text(self, text: str) -> int | float:
        """``text`` as this flag's number (argparse ``type=``): garbage, non-finite and
        out-of-range values raise ``ArgumentTypeError``, which argparse prefixes with
        the flag and turns into exit 2."""
        value: int | float | None = None
        stripped = text.strip() if text.isascii() else ""  # int("١٢") is 12: digits are ASCII here
        if self.integer:
            value = int(stripped) if _INTEGER.match(stripped) else None
        else:
            try:
                value = float(stripped)
            except ValueError:
                value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not {self.describe()}")
        problem = self.problem(value, text)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return int(value) if self.integer else value

    def check(self, value: Any, name: str | None = None) -> Any:
        """``value`` unchanged, or ``UsageError`` naming ``name`` (default: the flag)."""
        problem = self.problem(value)
        if problem:
            raise UsageError(f"{name or self.flag}: {problem}")
        return value


_SIZE = re.compile(r"^\s*([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*([KMGT]?I?B?)?\s*$", re.I | re.ASCII)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


@dataclass(frozen=True)
class Size:
    """A byte size written as text ("5GB", "500MB", "2GiB", a bare byte count): decimal
    units as transformers' ``max_shard_size``, binary with ``i``."""

    flag: str
    param: str | None
    low: int
    high: int

    def describe(self) -> str:
        return f"a size such as 5GB, 500MB or 2GiB, from {_bytes(self.low)} to {_bytes(self.high)}"

    def help(self, text: str) -> str:
        return f"{text} [{self.describe()}]"

    def problem(self, value: Any) -> str:
        try:
            self._bytes(value)
        except ValueError as e:
            return str(e)
        return ""

    def _bytes(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"{_shown(value)} is not {self.describe()}")
        if isinstance(value, int):
            n = value
        else:
            match = _SIZE.match(value)
            unit = (match.group(2) or "").upper() if match else ""
            if not match or unit not in _UNITS:
                raise ValueError(f"{_shown(value)} is not {self.describe()}")
            try:  # Decimal: exact, and no float overflow on many digits
                n = int(Decimal(match.group(1)) * _UNITS[unit])
            except InvalidOperation as e:  # pragma: no cover - the pattern admits only digits
                raise ValueError(f"{_shown(value)} is not {self.describe()}") from e
        if not self.low <= n <= self.high:
            raise ValueError(f"{_shown(value)} is out of range; expected {self.describe()}")
        return n

    def bytes(self, value: str | int, name: str | None = None) -> int:
        """The size in bytes, or ``UsageError`` naming ``name`` (default: the flag)."""
        try:
            return self._bytes(value)
        except ValueError as e:
            raise UsageError(f"{name or self.flag}: {e}") from None

    def from_text(self, text: str) -> str:
        """argparse ``type=``: the text itself once it is a size in range."""
        problem = self.problem(text)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return text

    def check(self, value: Any, name: str | None = None) -> Any:
        self.bytes(value, name)
        return value


def _bytes(n: int) -> str:
    for unit, size in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} byte" + ("s" if n != 1 else "")


@dataclass(frozen=True)
class Percents:
    """A canary schedule: comma-separated whole percents, each ``PERCENT``, strictly
    increasing (``--steps 10,50,100``); an empty item (``10,,100``) is refused."""

    flag: str
    param: str | None

    def describe(self) -> str:
        return f"comma-separated, increasing, each {PERCENT.describe()}, e.g. 10,50,100"

    def help(self, text: str) -> str:
        return f"{text} [{self.describe()}]"

    def values(self, text: Any, name: str | None = None) -> list[int]:
        """The percents, or ``UsageError`` naming ``name`` (default: the flag)."""
        problem, values = self._parse(text)
        if problem:
            raise UsageError(f"{name or self.flag}: {problem}")
        return values

    def problem(self, value: Any) -> str:
        return self._parse(value)[0]

    def _parse(self, text: Any) -> tuple[str, list[int]]:
        if not isinstance(text, str) or not text.strip():
            return f"{_shown(text)} is not a list of percents ({self.describe()})", []
        items = [s.strip() for s in text.split(",")]
        if any(not s for s in items):
            return f"{_shown(text)} has an empty item; expected {self.describe()}", []
        values = []
        for item in items:
            if not _INTEGER.match(item) or PERCENT.problem(int(item)):
                return f"{_shown(text)}: {_shown(item)} is not {PERCENT.describe()}", []
            values.append(int(item))
        if any(b <= a for a, b in zip(values, values[1:])):
            return f"{_shown(text)}: canary steps must increase", []
        return "", values

    def from_text(self, text: str) -> str:
        problem = self.problem(text)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return text

    def check(self, value: Any, name: str | None = None) -> Any:
        self.values(value, name)
        return value


_CPU = re.compile(r"^([0-9]{1,6}m|[0-9]{1,4}(\.[0-9]{1,3})?)$")
_MEMORY = re.compile(r"^[0-9]{1,9}(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")


@dataclass(frozen=True)
class Quantity:
    """A Kubernetes-style resource quantity, as KFP's ``set_cpu_limit`` / ``set_memory_limit``
    accept it ("8", "500m"; "32G", "16Gi"); positive."""

    flag: str
    param: str | None
    pattern: re.Pattern[str]
    example: str

    def describe(self) -> str:
        return f"a positive quantity such as {self.example}"

    def help(self, text: str) -> str:
        return f"{text} [{self.describe()}]"

    def problem(self, value: Any) -> str:
        if not isinstance(value, str) or not self.pattern.match(value) or not any(c in "123456789" for c in value):
            return f"{_shown(value)} is not {self.describe()}"
        return ""

    def check(self, value: Any, name: str | None = None) -> Any:
        problem = self.problem(value)
        if problem:
            raise UsageError(f"{name or self.flag}: {problem}")
        return value


Spec = Number | Size | Percents | Quantity

DAY_S = 86_400.0

# --- the ranges, once ------------------------------------------------------------
PERCENT = Number("--canary-percent", "canary_percent", 1, 100, integer=True, unit="percent")
CANARY_PERCENT = PERCENT
DEFAULT_CANARY_PERCENT = 10
STEPS = Percents("--steps", "steps")
SIGNIFICANCE = Number("--significance", "significance", 0, 0.5, low_open=True, high_open=True)
# The previous model is kept while the endpoint's lease (an hour) is held and not renewed.
KEEP_PREVIOUS_S = Number("--keep-previous", "keep_previous_s", 0, 1800, unit="seconds")
BAKE_S = Number("--bake-s", "bake_s", 0, DAY_S, unit="seconds")
MAX_ERROR_RATE_DELTA = Number("--max-error-rate-delta", "max_error_rate_delta", 0, 1, high_open=True)
MAX_LATENCY_RATIO = Number("--max-latency-ratio", "max_latency_ratio", 1, 100)
MIN_BAKE_REQUESTS = Number("--min-bake-requests", "min_bake_requests", 1, 1_000_000, integer=True)
ACCELERATOR_COUNT = Number("--accelerator-count", "accelerator_count", 1, 8, integer=True, choices=(1, 2, 4, 8))
MIN_REPLICA_COUNT = Number("--min-replica-count", "min_replica_count", 1, 1000, integer=True)
MAX_REPLICA_COUNT = Number("--max-replica-count", "max_replica_count", 1, 1000, integer=True)
DEPLOY_TIMEOUT_S = Number("--deploy-timeout", "deploy_timeout_s", 0, DAY_S, low_open=True, unit="seconds")
MAX_SHARD_SIZE = Size("--max-shard-size", "max_shard_size", 1, 10**12)
EXPORT_MIN_WORKER_SIZE = Size("--export-min-worker-size", "export_min_worker_size", 1, 10**15)
EXPORT_WORKERS = Number("--export-workers", "export_workers", 1, 256, integer=True)
# Vertex AI custom jobs: boot disks of 100 GB to 64 TB.
EXPORT_BOOT_DISK_SIZE_GB = Number("--export-boot-disk-size-gb", "export_boot_disk_size_gb", 100, 65_536,
                                  integer=True, unit="GB")
EXPORT_CPU = Quantity("--export-cpu", "export_cpu", _CPU, "8 or 500m")
EXPORT_MEMORY = Quantity("--export-memory", "export_memory", _MEMORY, "32G or 16Gi")
# verify-traffic's LLM signals (components/verify_traffic/signals.py; CLI flags, the pipeline uses the defaults)
PROBE_MAX_TOKENS = Number("--probe-max-tokens", None, 1, 4096, integer=True, unit="tokens")
MAX_LENGTH_RATE_DELTA = Number("--max-length-rate-delta", None, 0, 1)
MAX_EMPTY_RATE_DELTA = Number("--max-empty-rate-delta", None, 0, 1)
MAX_OUTPUT_LENGTH_RATIO = Number("--max-output-length-ratio", None, 1, 100)
MAX_TTFT_RATIO = Number("--max-ttft-ratio", None, 1, 100)
MAX_TPOT_RATIO = Number("--max-tpot-ratio", None, 1, 100)
MAX_LENGTH_RATE = Number("--max-length-rate", None, 0, 1)
MAX_EMPTY_RATE = Number("--max-empty-rate", None, 0, 1)
# CLI-only flags
SUBMIT_TIMEOUT_S = Number("--timeout", None, 0, 30 * DAY_S, low_open=True, unit="seconds")
POLL_S = Number("--poll", None, 0, 3600, low_open=True, unit="seconds")
MAX_CONCURRENT_RUNS = Number("--max-concurrent-runs", None, 1, 100, integer=True)  # Vertex AI's own limit
MAX_RUNS = Number("--max-runs", None, 1, 10_000_000, integer=True)
FAULT_COUNT = Number("--count", None, 1, 1_000_000, integer=True)
FAULT_MS = Number("--ms", None, 1, 600_000, integer=True, unit="milliseconds")
FAULT_PERCENT = Number("--percent", None, 0, 100, integer=True, unit="percent")
# The quality gate (tune2serve eval; components/quality_gate/POLICY.md); concurrency and case
# timeout are the CLI's (the pipeline step uses their defaults)
EVAL_MARGIN = Number("--margin", "eval_margin", 0, 1, high_open=True, unit="a fraction of the cases")
EVAL_DELTA = Number("--delta", "eval_delta", 0, 0.5, high_open=True, unit="a win rate")
EVAL_MIN_PASS_RATE = Number("--min-pass-rate", "eval_min_pass_rate", 0, 1, low_open=True,
                            unit="a fraction of the cases")
EVAL_CONCURRENCY = Number("--concurrency", None, 1, 64, integer=True, unit="requests in flight")
EVAL_CASE_TIMEOUT_S = Number("--case-timeout", None, 0, 3600, low_open=True, unit="seconds")

# Every numeric pipeline parameter of pipelines/promote.py, by name. A pipeline
# parameter has no None: where 0 means "not given" it says so.
PIPELINE: dict[str, Spec] = {s.param: s for s in (
    PERCENT, STEPS, SIGNIFICANCE, KEEP_PREVIOUS_S, BAKE_S, MAX_ERROR_RATE_DELTA, MAX_LATENCY_RATIO,
    MIN_BAKE_REQUESTS, ACCELERATOR_COUNT.or_zero("no machine spec given (machine_type empty)"),
    MIN_REPLICA_COUNT, MAX_REPLICA_COUNT, DEPLOY_TIMEOUT_S, MAX_SHARD_SIZE, EXPORT_MIN_WORKER_SIZE,
    EXPORT_WORKERS, EXPORT_BOOT_DISK_SIZE_GB, EXPORT_CPU, EXPORT_MEMORY, EVAL_MARGIN, EVAL_DELTA,
    EVAL_MIN_PASS_RATE) if s.param}
# Where an empty text means "not given" in the pipeline (steps: use canary_percent).
_EMPTY_OK = {"steps"}


def parameter_problems(values: Mapping[str, Any]) -> list[str]:
    """Every refused value among ``values`` (pipeline parameter name → value), named by
    parameter; names without a range are ignored."""
    problems = []
    for name, value in values.items():
        spec = PIPELINE.get(name)
        if spec is None or (name in _EMPTY_OK and value in ("", None)):
            continue
        problem = spec.problem(value)
        if problem:
            problems.append(f"parameter {name}: {problem}")
    return problems


def check_parameters(**values: Any) -> None:
    """A step's first line: refuse, naming each, the pipeline parameters out of range."""
    check_parameter_values(values)


def check_parameter_values(values: Mapping[str, Any]) -> None:
    problems = parameter_problems(values)
    if problems:
        raise UsageError("; ".join(problems))


def describe_parameter(name: str) -> str:
    """The range of a pipeline parameter in words ("" when it has none)."""
    spec = PIPELINE.get(name)
    return spec.describe() if spec else ""


__all__ = ["ACCELERATOR_COUNT", "BAKE_S", "CANARY_PERCENT", "DEFAULT_CANARY_PERCENT", "DEPLOY_TIMEOUT_S", "EVAL_CASE_TIMEOUT_S",
           "EVAL_CONCURRENCY", "EVAL_DELTA", "EVAL_MARGIN", "EVAL_MIN_PASS_RATE", "EXPORT_MIN_WORKER_SIZE",
           "FAULT_COUNT", "FAULT_MS", "FAULT_PERCENT", "KEEP_PREVIOUS_S", "MAX_CONCURRENT_RUNS",
           "MAX_EMPTY_RATE", "MAX_EMPTY_RATE_DELTA", "MAX_ERROR_RATE_DELTA", "MAX_LATENCY_RATIO",
           "MAX_LENGTH_RATE", "MAX_LENGTH_RATE_DELTA", "MAX_OUTPUT_LENGTH_RATIO", "MAX_REPLICA_COUNT", "MAX_RUNS",
           "MAX_SHARD_SIZE", "MAX_TPOT_RATIO", "MAX_TTFT_RATIO",
           "MIN_BAKE_REQUESTS", "MIN_REPLICA_COUNT", "Number", "PERCENT", "PIPELINE", "POLL_S", "PROBE_MAX_TOKENS",
           "Percents",
           "Quantity", "SIGNIFICANCE", "STEPS", "SUBMIT_TIMEOUT_S", "Size", "Spec", "check_parameter_values",
           "check_parameters", "describe_parameter", "parameter_problems"]
