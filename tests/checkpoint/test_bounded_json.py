"""The bounded JSON reader keeps its limits (size per file, depth, digits) without
refusing the legal values real producers write: integers of any length up to the parse
cap (transformers' int(1e30) "no limit" among them), floats such as 1e30, nulls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.checkpoint.storage import LocalFolder

_KEYS = st.sampled_from(["model_max_length", "max_length", "rope_theta", "vocab_size", "total_size", "seed"])


@settings(max_examples=200, deadline=None)
@given(key=_KEYS, value=st.integers(min_value=-(10 ** bounded_json.MAX_INT_DIGITS - 1),
                                    max_value=10 ** bounded_json.MAX_INT_DIGITS - 1))
def test_integers_up_to_the_cap_are_read_exactly(key: str, value: int) -> None:
    assert bounded_json.loads(json.dumps({key: value}), "tokenizer_config.json") == {key: value}


@settings(max_examples=50, deadline=None)
@given(digits=st.integers(bounded_json.MAX_INT_DIGITS + 1, 20_000))
def test_integers_past_the_cap_are_refused_naming_the_file(digits: int) -> None:
    with pytest.raises(bounded_json.JsonLimitError, match=r"^config\.json: integer of \d+ digits"):
        bounded_json.loads('{"n": ' + "7" * digits + "}", "config.json")


@settings(max_examples=200, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False) | st.none() | st.just(1e30))
def test_floats_and_nulls_are_read(value: float | None) -> None:
    assert bounded_json.loads(json.dumps({"model_max_length": value}), "tokenizer_config.json") == {"model_max_length": value}


def test_a_long_integer_is_a_finite_number() -> None:
    assert bounded_json.is_finite_number(int(1e30)) and bounded_json.is_finite_number(10 ** 3000)
    assert not bounded_json.is_finite_number(float("nan")) and not bounded_json.is_finite_number(True)


@pytest.mark.parametrize(("name", "cap"), sorted(bounded_json.MAX_BYTES_BY_NAME.items()))
def test_each_file_has_its_own_size_cap(name: str, cap: int, tmp_path: Path) -> None:
    """Refused from the listing just past its cap (a sparse file: nothing is read); a file
    at the cap is read (checked where the cap is small enough to parse quickly). A megabyte
    config.json is refused at once; a tokenizer.json of tens of MB is not."""
    with open(tmp_path / name, "wb") as f:
        f.truncate(cap + 1)
    with pytest.raises(bounded_json.JsonLimitError, match=f"{name}: {cap + 1} bytes is above the {cap}-byte limit"):
        bounded_json.read_json(LocalFolder(tmp_path), name)
    if cap <= 4 * 1024 * 1024:
        (tmp_path / name).write_bytes(b'{"k": "' + b"x" * (cap - 9) + b'"}')  # exactly cap bytes
        assert bounded_json.read_json(LocalFolder(tmp_path), name)["k"]


def test_caps_fit_the_files() -> None:
    assert bounded_json.max_bytes_for("config.json") <= 1024 * 1024
    assert bounded_json.max_bytes_for("gs://b/p/tokenizer.json") >= 64 * 1024 * 1024
    assert bounded_json.max_bytes_for("model.safetensors.index.json") == bounded_json.MAX_JSON_BYTES
