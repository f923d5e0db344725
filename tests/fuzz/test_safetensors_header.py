"""Generated broken safetensors headers — valid JSON that is hostile (deep nesting,
integers past u64 or of thousands of digits, duplicate tensor names, a million
entries), layouts that are not exactly contiguous (gaps, overlaps, offsets not from 0,
trailing bytes), entries of the wrong type, bytes that are not a header at all — each
through the real ``tune2serve validate`` and ``tune2serve export``: exit 1 naming
the file, no traceback."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ, assert_refused, run_export, run_validate

ST = "model.safetensors"


def _file(header: str | bytes, data: bytes) -> bytes:
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw)) + raw + data


def _entries(n: int, gap: int = 0, overlap: int = 0, start: int = 0) -> tuple[dict, int]:
    doc, pos = {}, start
    for i in range(n):
        doc[f"w{i}"] = {"dtype": "F32", "shape": [2], "data_offsets": [pos, pos + 8]}
        pos += 8 + (gap if i == 0 else 0) - (overlap if i == 0 else 0)
    return doc, pos


KINDS = ["gap", "overlap", "start", "trailing", "deep", "bigint", "u64", "dup", "many", "not-object", "entry-type",
         "shape-type", "garbage", "huge-length", "short"]


@st.composite
def broken_file(draw: st.DrawFn, kind: str) -> bytes:
    n = draw(st.integers(2, 6))
    if kind in ("gap", "overlap", "start", "trailing"):
        doc, end = _entries(n, gap=draw(st.integers(1, 64)) if kind == "gap" else 0,
                            overlap=draw(st.integers(1, 7)) if kind == "overlap" else 0,
                            start=draw(st.integers(1, 64)) if kind == "start" else 0)
        extra = draw(st.integers(1, 64)) if kind == "trailing" else 0
        return _file(json.dumps(doc), b"\0" * (end + extra))
    if kind == "deep":
        d = draw(st.integers(200, 20000))
        return _file('{"w": ' + "[" * d + "]" * d + "}", b"")
    if kind == "bigint":
        digits = draw(st.integers(21, 8000))
        return _file('{"w": {"dtype": "F32", "shape": [' + "9" * digits + '], "data_offsets": [0, 8]}}', b"\0" * 8)
    if kind == "u64":
        big = 2**64 + draw(st.integers(0, 1000))
        return _file(json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, big]}}), b"\0" * 8)
    if kind == "dup":
        body = '{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, ' \
               '"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}'
        return _file(body, b"\0" * 16)
    if kind == "many":
        return _file("{" + ",".join(f'"t{i}":{{}}' for i in range(200_010)) + "}", b"")
    if kind == "not-object":
        return _file(draw(st.sampled_from(["[]", "1", '"x"', "null", "[{}]"])), b"")
    if kind == "entry-type":
        return _file(json.dumps({"w": draw(st.sampled_from([1, "x", [], None]))}), b"")
    if kind == "shape-type":
        shape = draw(st.sampled_from([[-1], [1.5], ["2"], [True], [2] * 40, [2**40] * 3]))
        return _file(json.dumps({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 8]}}), b"\0" * 8)
    if kind == "garbage":
        raw = draw(st.binary(min_size=1, max_size=64))
        return _file(raw, b"")
    if kind == "huge-length":
        return struct.pack("<Q", draw(st.integers(2**40, 2**64 - 1))) + b"{}"
    return draw(st.binary(max_size=7))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
@settings(FUZZ, max_examples=6)
@given(data=st.data())
def test_every_broken_header_is_a_finding_naming_the_file(kind: str, data: st.DataObject, tiny_llama: Path,
                                                          tmp_path_factory, capsys: pytest.CaptureFixture[str]) -> None:
    data = data.draw(broken_file(kind))
    folder = tmp_path_factory.mktemp("hdr") / "ckpt"
    shutil.copytree(tiny_llama, folder)
    (folder / ST).write_bytes(data)

    code, doc, err = run_validate(folder, capsys)

    assert_refused(code, doc, err, ST)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
@settings(FUZZ, max_examples=2)
@given(data=st.data())
def test_export_refuses_every_broken_header(kind: str, data: st.DataObject, tiny_llama: Path, tmp_path_factory,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = data.draw(broken_file(kind))
    work = tmp_path_factory.mktemp("hdrx")
    folder = work / "ckpt"
    shutil.copytree(tiny_llama, folder)
    (folder / ST).write_bytes(data)

    code, text = run_export([str(folder), str(work / "dest")], capsys)

    assert code in (1, 2), text
    assert "Traceback" not in text
    assert ST in text
    assert not (work / "dest" / "manifest.json").exists()
