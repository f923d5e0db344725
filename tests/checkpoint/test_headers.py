"""Header inspection codes and the bounded pickle scan."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tune2serve.components.checkpoint.index import inspect_index, parse_index
from tune2serve.components.checkpoint.pickle_scan import scan_folder_file
from tune2serve.components.checkpoint.safetensors_header import inspect_header, read_header
from tune2serve.components.checkpoint.storage import LocalFolder
from tune2serve.components.errors import CheckpointError
from tests.fixtures.broken_models import edit_json, make_broken, variant


def test_good_header_has_no_issues(tiny_llama: Path) -> None:
    found = inspect_header(LocalFolder(tiny_llama), "model.safetensors")
    assert found.failure is None and found.header is not None and found.header.issues == []


@pytest.mark.parametrize("name, code", [("header-length-2^60", "header-length-invalid"),
                                        ("header-not-json", "header-not-json"),
                                        ("header-json-array", "header-not-object")])
def test_unparseable_headers(name: str, code: str, tiny_llama: Path, tmp_path: Path) -> None:
    folder = make_broken(tiny_llama, tmp_path / "b", variant(name))
    found = inspect_header(LocalFolder(folder), "model.safetensors")
    assert found.header is None and found.failure.code == code
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_header(LocalFolder(folder), "model.safetensors")


def test_layout_issue_codes(tiny_llama: Path, tmp_path: Path) -> None:
    folder = make_broken(tiny_llama, tmp_path / "b", variant("overlapping-tensors"))
    header = read_header(LocalFolder(folder), "model.safetensors")
    assert [i.code for i in header.issues] == ["header-overlap"]
    assert header.problems == [i.message for i in header.issues]


def test_index_outside_entries_are_reported_not_raised_by_inspect(tiny_qwen_sharded: Path, tmp_path: Path) -> None:
    folder = tmp_path / "q"
    shutil.copytree(tiny_qwen_sharded, folder)
    edit_json(folder / "model.safetensors.index.json",
              lambda d: d["weight_map"].update({"model.norm.weight": "../../etc/passwd"}))
    index, problems = inspect_index(LocalFolder(folder), "model.safetensors.index.json")
    assert [p.code for p in problems] == ["index-path-outside"] and "model.norm.weight" not in index.weight_map
    with pytest.raises(CheckpointError, match="points outside the checkpoint folder"):
        parse_index(LocalFolder(folder), "model.safetensors.index.json")


def test_pickle_scan_reads_only_the_zip_directory_and_data_pkl(tiny_llama_bin: Path) -> None:
    folder = LocalFolder(tiny_llama_bin)
    assert scan_folder_file(folder, "pytorch_model.bin") == []
    size = folder.size("pytorch_model.bin")
    assert folder.bytes_read < 96 * 1024 < size
