"""The fused row merge (``components/export/merge/lora_rows.c``) on generated blocks.

What must hold for any shape, rank, dtype and scaling (hypothesis):
* the vector path (AVX2+FMA+F16C) and the portable path give the same bits;
* the result is W + s·L@R (DoRA: rescaled per row) within float32's rounding of a
  float64 reference and one rounding to the dtype — exactly torch's rounding (to
  nearest even) of the same float32 values;
* the finiteness check counts what torch's check (``finite.check_finite``) counts on
  the same float32 block — NaN, ±Inf, beyond the dtype's range — and nothing when
  everything is in range.
The export through it is compared with PEFT's merge in test_merge_oracle.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.components.export.merge import _lora_rows
from tune2serve.components.export.merge.finite import FLOAT_LIMITS

KINDS = {"F32": (0, np.float32), "BF16": (1, None), "F16": (2, np.float16)}


def _to_bits(values: np.ndarray, dtype: str) -> bytes:
    """float32 values in the dtype, rounded to nearest even (torch's rounding)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(
        {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[dtype]).view(torch.uint8).numpy().tobytes()


def _from_bits(raw: bytes, dtype: str, shape: tuple[int, int]) -> np.ndarray:
    if dtype == "BF16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.frombuffer(raw, "<f4" if dtype == "F32" else "<f2").astype(np.float32).reshape(shape)


def _merge(base: bytes, dtype: str, left: np.ndarray, right: np.ndarray, scaling: float,
           magnitude: np.ndarray | None = None, **flags: Any) -> tuple[Any, bytes]:
    out = bytearray(len(base))
    rows, rank = left.shape
    result = _lora_rows.merge_rows(base, out, KINDS[dtype][0], left, right, rows, right.shape[1], rank, scaling,
                                   FLOAT_LIMITS[dtype], magnitude, **flags)
    return result, bytes(out)


@st.composite
def blocks(draw: Any) -> dict[str, Any]:
    rows = draw(st.integers(1, 13))
    cols = draw(st.integers(1, 70))  # across the 16-column tiles and their remainders
    rank = draw(st.integers(1, 20))
    dtype = draw(st.sampled_from(sorted(KINDS)))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    w = rng.normal(0, draw(st.sampled_from([0.02, 1.0, 30.0])), (rows, cols)).astype(np.float32)
    left = (rng.normal(0, 0.05, (rows, rank))).astype(np.float32)
    right = (rng.normal(0, 0.05, (rank, cols))).astype(np.float32)
    scaling = draw(st.sampled_from([0.5, 1.0, 2.0, 1 / 3, 16 / np.sqrt(8)]))
    magnitude = rng.uniform(0.1, 3.0, rows).astype(np.float32) if draw(st.booleans()) else None
    if dtype != "F32" and draw(st.booleans()):
        # Ties: every merged value exactly halfway between two values of the dtype (the
        # update is half a unit in the last place of each base value, up or down), where
        # rounding to nearest even and rounding half up part ways. Random values almost
        # never land there.
        bits = 7 if dtype == "BF16" else 10
        exponent = rng.integers(-6, 6, cols)
        w = ((1 + rng.integers(0, 2 ** bits, (rows, cols)) / 2 ** bits) * 2.0 ** exponent
             * rng.choice([-1, 1], (rows, cols))).astype(np.float32)
        left = rng.choice([-1.0, 1.0], (rows, 1)).astype(np.float32)
        right = (2.0 ** (exponent - bits - 1)).astype(np.float32)[None, :]
        scaling, magnitude = 1.0, None
    return dict(base=_to_bits(w, dtype), dtype=dtype, left=left, right=right, scaling=float(np.float32(scaling)),
                magnitude=magnitude, shape=(rows, cols))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks())
def test_the_vector_and_portable_paths_give_the_same_bits(block: dict[str, Any]) -> None:
    args = (block["base"], block["dtype"], block["left"], block["right"], block["scaling"], block["magnitude"])
    fast, fast_out = _merge(*args)
    slow, slow_out = _merge(*args, portable=True)
    assert fast == slow == 0
    assert fast_out == slow_out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks())
def test_the_result_is_the_merge_rounded_once(block: dict[str, Any]) -> None:
    dtype, (rows, cols) = block["dtype"], block["shape"]
    failed, out = _merge(block["base"], dtype, block["left"], block["right"], block["scaling"], block["magnitude"])
    assert failed == 0
    w = _from_bits(block["base"], dtype, (rows, cols)).astype(np.float64)
    exact = w + block["scaling"] * (block["left"].astype(np.float64) @ block["right"].astype(np.float64))
    # the float32 sums' own rounding: a few float32 ulp of the magnitudes summed
    scale = np.abs(w) + np.abs(block["scaling"]) * (np.abs(block["left"]) @ np.abs(block["right"])).astype(np.float64)
    if block["magnitude"] is not None:  # DoRA's factor scales the row, and its errors with it
        factor = block["magnitude"].astype(np.float64) / np.linalg.norm(exact, axis=1)
        exact *= factor[:, None]
        scale *= factor[:, None]
    got = _from_bits(out, dtype, (rows, cols)).astype(np.float64)
    ulp = {"F32": 2.0 ** -23, "BF16": 2.0 ** -8, "F16": 2.0 ** -10}[dtype]  # one rounding to the dtype
    bound = ulp * np.abs(exact) + 2.0 ** -20 * scale + (6e-8 if dtype == "F16" else 1e-38)  # F16: its subnormal step
    assert np.all(np.abs(got - exact) <= bound), float(np.max(np.abs(got - exact) - bound))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks())
def test_the_rounding_to_the_dtype_is_torchs(block: dict[str, Any]) -> None:
    """The same merge in float32 (the base widened exactly: the same float32 values),
    then torch's rounding to the dtype, gives the kernel's bits."""
    dtype, (rows, cols) = block["dtype"], block["shape"]
    widened = _from_bits(block["base"], dtype, (rows, cols)).tobytes()
    _, in_f32 = _merge(widened, "F32", block["left"], block["right"], block["scaling"], block["magnitude"])
    _, in_dtype = _merge(block["base"], dtype, block["left"], block["right"], block["scaling"], block["magnitude"])
    assert in_dtype == _to_bits(np.frombuffer(in_f32, np.float32).reshape(rows, cols), dtype)


def _torch_counts(values: np.ndarray, dtype: str) -> tuple[int, int, int]:
    """What finite.check_finite counts on the same float32 block."""
    import torch

    from tune2serve.components.errors import MergeError
    from tune2serve.components.export.merge.finite import check_finite

    block = torch.from_numpy(values)
    target = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[dtype]
    try:
        check_finite(block, "t", None, target)
    except MergeError:
        nans, infs = int(torch.isnan(block).sum()), int(torch.isinf(block).sum())
        return nans, infs, 0 if nans or infs else int((block.abs() > FLOAT_LIMITS[dtype]).sum())
    return 0, 0, 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 9), cols=st.integers(1, 40), dtype=st.sampled_from(sorted(KINDS)),
       poison=st.lists(st.tuples(st.integers(0, 10 ** 6), st.sampled_from(["nan", "inf", "-inf", "huge", "max"])),
                       max_size=6),
       seed=st.integers(0, 2 ** 32 - 1))
def test_the_check_counts_what_torchs_check_counts(rows: int, cols: int, dtype: str, poison: list[tuple[int, str]],
                                                   seed: int) -> None:
    """Poisoned values (NaN, ±Inf, a float32 beyond the dtype's range, the dtype's own
    largest value, which passes): torch's check of the same merged float32 block is the
    reference."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, (rows, cols)).astype(np.float32)
    for at, what in poison:
        # "huge": finite in float32, beyond the dtype (float32 itself has no such value: ±Inf)
        huge = {"F32": np.inf, "BF16": 3.4e38, "F16": 1e5}[dtype]
        values.flat[at % values.size] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": huge,
                                         "max": FLOAT_LIMITS[dtype]}[what]
    # The base, in its dtype, cannot hold a finite value beyond its range: those come from
    # the update instead (left = I, right = those values; finite, so 0·x adds nothing).
    beyond = np.isfinite(values) & (np.abs(values) > FLOAT_LIMITS[dtype])
    base = _to_bits(np.where(beyond, 0, values), dtype)
    left, right = np.eye(rows, dtype=np.float32), np.where(beyond, values, 0).astype(np.float32)
    merged_f32 = np.where(beyond, values, _from_bits(base, dtype, (rows, cols))).astype(np.float32)
    failed, _ = _merge(base, dtype, left, right, 1.0)
    detail, _ = _merge(base, dtype, left, right, 1.0, detail=True)
    want = _torch_counts(merged_f32, dtype)
    assert tuple(detail[1:3]) == want[:2]  # NaN, ±Inf
    if not want[0] and not want[1]:  # torch's check counts the values beyond range when all are finite
        assert detail[3] == want[2]
    assert (failed > 0) == any(want) and detail[0] == failed


def test_buffers_too_small_or_read_only_are_refused() -> None:
    left, right = np.zeros((2, 1), np.float32), np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="out holds 8 bytes, 16 needed"):
        _lora_rows.merge_rows(bytes(16), bytearray(8), 1, left, right, 2, 4, 1, 1.0, 1.0)
    with pytest.raises(ValueError, match="right holds 16 bytes, 32 needed"):
        _lora_rows.merge_rows(bytes(32), bytearray(32), 1, left, right, 2, 8, 1, 1.0, 1.0)
    with pytest.raises(TypeError):
        _lora_rows.merge_rows(bytes(16), bytes(16), 1, left, right, 2, 4, 1, 1.0, 1.0)
    with pytest.raises(ValueError, match="bad kind"):
        _lora_rows.merge_rows(bytes(16), bytearray(16), 7, left, right, 2, 4, 1, 1.0, 1.0)


def test_this_machine_runs_the_vector_path() -> None:
    """CI's machines have AVX2: the path the benchmark measures is the one tested above."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the vector path is x86-64's")
    assert _lora_rows.vector_path() is True


def test_only_the_benchmark_can_leave_the_check_out() -> None:
    """check=False (bench_finite's A/B) leaves the vector path's check out; by default a
    NaN is counted, and the detail (the export's message) always counts."""
    base = np.full((4, 32), 1.0, np.float32)
    base[2, 17] = np.nan
    left, right = np.zeros((4, 1), np.float32), np.zeros((1, 32), np.float32)
    args = (base.tobytes(), bytearray(base.nbytes), 0, left, right, 4, 32, 1, 1.0, FLOAT_LIMITS["F32"])
    assert _lora_rows.merge_rows(*args) == 1
    assert _lora_rows.merge_rows(*args, detail=True, check=False)[:2] == (1, 1)
    if _lora_rows.vector_path():
        assert _lora_rows.merge_rows(*args, check=False) == 0
