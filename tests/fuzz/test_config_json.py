"""Hostile but valid JSON in every config file validate and export read: deep nesting,
integers of thousands of digits, duplicate keys, a JSON array or plain text where an
object belongs, adapter values of the wrong type or range, patterns that backtrack.
Validate and export answer each with exit 1 naming the file, no traceback, fast."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.export.conftest import assert_nothing_published, make_adapter
from tests.fuzz.conftest import FUZZ, assert_refused, run_export, run_validate


def hostile_json() -> st.SearchStrategy[str]:
    depth = st.integers(65, 5000)
    return st.one_of(
        depth.map(lambda d: "[" * d + "]" * d),
        depth.map(lambda d: '{"a":' * d + "1" + "}" * d),
        st.integers(21, 6000).map(lambda n: '{"num_hidden_layers": ' + "9" * n + "}"),
        st.just('{"num_hidden_layers": 2, "num_hidden_layers": 100}'),
        st.sampled_from(["[]", "[1, 2]", '"text"', "null", "3", "not json", "{", "\xff\xfe"]),
        st.integers(1, 40).map(lambda d: "[" * d + "}" * d),
    )


@pytest.mark.timeout(120)
@FUZZ
@given(name=st.sampled_from(["config.json", "tokenizer_config.json"]), text=hostile_json())
def test_validate_refuses_hostile_config_json(name: str, text: str, tiny_llama: Path, tmp_path_factory,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path_factory.mktemp("cfg") / "ckpt"
    shutil.copytree(tiny_llama, folder)
    (folder / name).write_bytes(text.encode("utf-8", "surrogateescape"))

    code, doc, err = run_validate(folder, capsys)

    assert_refused(code, doc, err, name)


@pytest.fixture(scope="module")
def adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_llama, tmp_path_factory.mktemp("adapter") / "a", r=4, lora_alpha=8,
                        target_modules=["q_proj", "v_proj"])


BAD_VALUES = st.one_of(
    st.sampled_from([("r", 0), ("r", -4), ("r", 4.5), ("r", "8"), ("r", True), ("r", 10**30),
                     ("lora_alpha", float("nan")), ("lora_alpha", float("inf")), ("lora_alpha", "16"),
                     ("lora_alpha", 1e300), ("use_rslora", "false"), ("use_dora", 1),
                     ("rank_pattern", {"q_proj": 0}), ("rank_pattern", {"[": 4}), ("rank_pattern", []),
                     ("alpha_pattern", {"q_proj": "x"}), ("alpha_pattern", {"q_proj": float("-inf")}),
                     ("alpha_pattern", {"(": 1.0}), ("modules_to_save", "lm_head"),
                     ("rank_pattern", {"x" * 600: 8}), ("rank_pattern", {"(?<=": 8})]),
)


@pytest.mark.timeout(180)
@FUZZ
@given(bad=BAD_VALUES)
def test_export_refuses_bad_adapter_values_before_merging(bad: tuple[str, object], adapter: Path, tmp_path_factory,
                                                          capsys: pytest.CaptureFixture[str], tiny_llama: Path) -> None:
    key, value = bad
    work = tmp_path_factory.mktemp("bad")
    folder = work / "adapter"
    shutil.copytree(adapter, folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg[key] = value
    (folder / "adapter_config.json").write_text(json.dumps(cfg))  # NaN/Infinity as Python writes them

    code, text = run_export([str(folder), str(work / "dest"), "--base-model", str(tiny_llama)], capsys)

    assert code == 1, text
    assert "Traceback" not in text
    assert "adapter_config.json" in text
    assert_nothing_published(work / "dest")


@pytest.mark.timeout(120)
@FUZZ
@given(text=hostile_json())
def test_export_refuses_hostile_adapter_config_json(text: str, adapter: Path, tmp_path_factory, tiny_llama: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path_factory.mktemp("hostile")
    folder = work / "adapter"
    shutil.copytree(adapter, folder)
    (folder / "adapter_config.json").write_bytes(text.encode("utf-8", "surrogateescape"))

    code, out = run_export([str(folder), str(work / "dest"), "--base-model", str(tiny_llama)], capsys)

    assert code in (1, 2), out
    assert "Traceback" not in out
    assert "adapter_config.json" in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pattern", ["(.*a){12}$", "(a|aa)+$", "((q_proj)+)+x", "((.*)*)*z", r"(\w|\.|_)*\d{4}"])
def test_backtracking_patterns_neither_hang_nor_crash(pattern: str, adapter: Path, tmp_path: Path, tiny_llama: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Matched by a backtracking-safe engine under a time limit: each export ends
    (merged, or refused naming the pattern), well inside the test's timeout."""
    folder = tmp_path / "adapter"
    shutil.copytree(adapter, folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["alpha_pattern"] = {pattern: 16}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))

    code, text = run_export([str(folder), str(tmp_path / "dest"), "--base-model", str(tiny_llama)], capsys)

    assert code in (0, 1), text
    assert "Traceback" not in text
    assert code == 0 or pattern in text


@pytest.mark.timeout(120)
@FUZZ
@given(key=st.sampled_from(["num_hidden_layers", "hidden_size", "vocab_size", "num_attention_heads",
                            "intermediate_size", "num_key_value_heads"]),
       value=st.one_of(st.integers(10**6 + 1, 2**64), st.integers(max_value=-1), st.sampled_from([1.5, "12", True, [], {}])))
def test_validate_refuses_absurd_config_sizes_without_exhausting_memory(key: str, value: object, tiny_llama: Path,
                                                                        tmp_path_factory,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``num_hidden_layers`` of 10⁹ used to build a billion-entry set in the shape check."""
    folder = tmp_path_factory.mktemp("size") / "ckpt"
    shutil.copytree(tiny_llama, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))

    code, doc, err = run_validate(folder, capsys)

    assert_refused(code, doc, err, "config.json")
