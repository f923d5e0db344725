"""Generated broken weight indexes (``model.safetensors.index.json``): hostile JSON,
the same tensor listed twice (two shards), entries of the wrong type, names that leave
the folder or name missing shards — through the real validate and export: exit 1
naming the index, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ, assert_refused, run_export, run_validate

INDEX = "model.safetensors.index.json"
KINDS = ["deep", "bigint", "duplicate-tensor", "not-object", "map-type", "value-type", "outside", "missing-shard",
         "garbage"]


def _broken(kind: str, good: dict, draw: st.DataObject) -> str:
    wm = good["weight_map"]
    first = sorted(wm)[0]
    if kind == "deep":
        d = draw.draw(st.integers(100, 20000))
        return '{"weight_map": ' + "[" * d + "]" * d + "}"
    if kind == "bigint":
        return '{"metadata": {"total_size": ' + "7" * draw.draw(st.integers(21, 9000)) + '}, "weight_map": {}}'
    if kind == "duplicate-tensor":
        other = next(s for s in sorted(set(wm.values())) if s != wm[first])
        body = json.dumps(good)[:-2]  # drop the closing "}}" of weight_map and the document
        return body + f', "{first}": "{other}"' + "}}"
    if kind == "not-object":
        return draw.draw(st.sampled_from(["[]", "null", "1", '"weight_map"', '{"weight_map": []}']))
    if kind == "map-type":
        return json.dumps({"weight_map": draw.draw(st.sampled_from([[], 1, "x", None]))})
    if kind == "value-type":
        return json.dumps({"weight_map": {**wm, first: draw.draw(st.sampled_from([1, None, [], {}, True]))}})
    if kind == "outside":
        name = draw.draw(st.sampled_from(["../x.safetensors", "/etc/passwd", "C:\\\\x.safetensors", "a/../../b"]))
        return json.dumps({"weight_map": {**wm, first: name}})
    if kind == "missing-shard":
        return json.dumps({"weight_map": {**wm, first: "model-99999-of-99999.safetensors"}})
    return draw.draw(st.binary(min_size=1, max_size=40)).decode("latin-1")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
@settings(FUZZ, max_examples=4)
@given(draw=st.data())
def test_every_broken_index_is_named(kind: str, draw: st.DataObject, tiny_qwen_sharded: Path, tmp_path_factory,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path_factory.mktemp("idx") / "ckpt"
    shutil.copytree(tiny_qwen_sharded, folder)
    good = json.loads((folder / INDEX).read_text())
    (folder / INDEX).write_text(_broken(kind, good, draw), encoding="latin-1")

    code, doc, err = run_validate(folder, capsys)
    assert_refused(code, doc, err, INDEX)

    code, text = run_export([str(folder), str(folder.parent / "dest")], capsys)
    assert code in (1, 2), text
    assert "Traceback" not in text and INDEX in text


def test_a_tensor_in_two_shards_is_refused_by_export(tiny_qwen_sharded: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The index names one shard, but a second shard holds the same tensor too."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_qwen_sharded, folder)
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    first, second = load_file(folder / shards[0]), load_file(folder / shards[1])
    name = sorted(first)[0]
    save_file({**second, name: first[name]}, folder / shards[1], metadata={"format": "pt"})

    code, text = run_export([str(folder), str(tmp_path / "dest")], capsys)

    assert code == 1 and "Traceback" not in text
    assert f"tensor {name!r} is in both" in text
