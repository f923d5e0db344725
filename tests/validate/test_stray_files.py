"""Training state and pickles beside the weights are validate errors (``training-state``,
``pickle-outside-weights``), found by name at any depth and by first bytes under any
other name, and never unpickled: generated folders of hostile pickles whose payload
would run ``touch MARKER``, beside ordinary files that must not be flagged."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.components.checkpoint.storage import LocalFolder
from tune2serve.components.checkpoint.training_state import (
    PICKLE_OUTSIDE_WEIGHTS,
    PICKLE_SUFFIXES,
    TRAINING_STATE,
    TRAINING_STATE_PREFIXES,
    looks_like_pickle,
    stray_files,
)


class RunsShell:
    """Unpickling this runs ``touch MARKER``: the payload of a tampered optimizer.pt."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def hostile_bytes(marker: str, form: str) -> bytes:
    """A pickle whose payload would run ``touch MARKER``: a bare pickle of protocol 2..5,
    or torch.save's zip (what an optimizer.pt is)."""
    state = {"state": {}, "param_groups": [{"lr": 1e-4}], "payload": RunsShell(marker)}
    if form == "torch":
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()
    return pickle.dumps(state, protocol=int(form))


_STEM = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12).filter(
    lambda s: not s.startswith(TRAINING_STATE_PREFIXES) and not s.startswith(("model", "tokenizer", "config")))
_DIR = st.lists(st.sampled_from(["checkpoint-5", "global_step5", "original", "a b", "x"]), max_size=2).map("/".join)
_FORM = st.sampled_from(["2", "3", "4", "5", "torch"])
_TRAINING = st.tuples(st.sampled_from(TRAINING_STATE_PREFIXES),
                      st.sampled_from([".pt", ".pth", ".bin", ".json", "_0.pth", "_1.pth", ""]))


@st.composite
def stray(draw: st.DrawFn) -> tuple[str, str, str]:
    """(relative name, expected code, content form): training state, a pickle by its
    name, or a pickle under a name that says nothing."""
    where = draw(_DIR)
    kind = draw(st.sampled_from(["training", "named", "disguised"]))
    if kind == "training":
        prefix, suffix = draw(_TRAINING)
        base, code = prefix + suffix, TRAINING_STATE
    elif kind == "named":
        suffix = draw(st.sampled_from([s for s in PICKLE_SUFFIXES if s != ".bin"] + [".PT", ".Pkl"]))
        base, code = draw(_STEM) + suffix, PICKLE_OUTSIDE_WEIGHTS
        if not where:  # a top-level .bin is a weight file (scanned instead): below the top only
            where = draw(st.sampled_from(["sub", "original"]))
    else:
        base, code = draw(_STEM) + draw(st.sampled_from(["", ".dat", ".npy", ".json", ".txt", ".model"])), \
            PICKLE_OUTSIDE_WEIGHTS
    form = "json" if base.endswith(".json") and kind == "training" else draw(_FORM)
    return (f"{where}/{base}" if where else base), code, form


_BENIGN = st.tuples(_DIR, _STEM, st.sampled_from(["", ".md", ".txt", ".json", ".jinja", ".dat"]),
                    st.binary(max_size=64).filter(lambda b: not looks_like_pickle(b)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(strays=st.lists(stray(), min_size=1, max_size=5, unique_by=lambda s: s[0]),
       benign=st.lists(_BENIGN, max_size=4))
def test_stray_files_are_errors_naming_each_and_never_unpickled(tiny_llama: Path, strays: list[tuple[str, str, str]],
                                                                benign: list[tuple[str, str, str, bytes]]) -> None:
    from tune2serve.components.validate import ValidateOptions, validate_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ckpt"
        shutil.copytree(tiny_llama, folder)
        marker = Path(tmp) / "MARKER"
        expected = {}
        for name, code, form in strays:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(json.dumps({"global_step": 5}).encode() if form == "json" else hostile_bytes(str(marker), form))
            expected[name] = code
        for where, stem, suffix, data in benign:
            name = f"{where}/ok-{stem}{suffix}" if where else f"ok-{stem}{suffix}"
            if name in expected:
                continue
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        report = validate_checkpoint(str(folder), ValidateOptions())
        flagged = {f.file: f for f in report.findings if f.code in (TRAINING_STATE, PICKLE_OUTSIDE_WEIGHTS)}
        assert {n: f.code for n, f in flagged.items()} == expected
        assert all(f.severity == "error" and f.file in f.message and "tune2serve export" in f.message
                   for f in flagged.values())
        assert not report.ok
        assert not marker.exists()


def test_the_weights_themselves_are_not_stray_and_a_clean_model_validates(tiny_llama_bin: Path, tiny_llama: Path) -> None:
    """A .bin at the top is a weight file (the pickles check scans it), and the good
    models hold nothing stray."""
    from tune2serve.components.validate import ValidateOptions, validate_checkpoint

    from tune2serve.components.checkpoint.index import find_weight_files

    for model in (tiny_llama_bin, tiny_llama):
        folder = LocalFolder(model)
        listing = folder.list()
        weights = find_weight_files(listing)
        assert stray_files(folder, {o.name: o.size for o in listing}, weights.bins + weights.safetensors) == []
        report = validate_checkpoint(str(model), ValidateOptions())
        assert report.ok and not [f for f in report.findings if f.code in (TRAINING_STATE, PICKLE_OUTSIDE_WEIGHTS)]
    # the same .bin, not counted among the weights, is a pickle outside them
    sizes = {"pytorch_model.bin": (tiny_llama_bin / "pytorch_model.bin").stat().st_size}
    assert [(s.name, s.code) for s in stray_files(LocalFolder(tiny_llama_bin), sizes, [])] == [
        ("pytorch_model.bin", PICKLE_OUTSIDE_WEIGHTS)]


@pytest.mark.parametrize("head,is_pickle", [
    (b"\x80\x02}q\x00.", True), (b"\x80\x05\x95", True), (b"\x80\x01", False), (b"\x80\x06", False),
    (b"PK\x03\x04" + bytes(22) + (13).to_bytes(2, "little") + bytes(2) + b"arch/data.pkl", True),
    (b"PK\x03\x04" + bytes(22) + (9).to_bytes(2, "little") + bytes(2) + b"arch/x.py", False),
    (b"{\"a\": 1}", False), (b"", False), (b"\n\x0e<unk>", False),
])
def test_pickle_magic(head: bytes, is_pickle: bool) -> None:
    assert looks_like_pickle(head) is is_pickle
