"""The pickle scan against the public bypasses of picklescan/ModelScan and generated
variants of each: every one is refused by validate, naming the file, and none runs.

Bypasses reproduced (each a class of its own):
- memo confusion: names stored with BINPUT/PUT/MEMOIZE and replayed by GET/BINGET
  (mmaitre314/picklescan#14, #22/#23; protectai/modelscan#85, PR #348);
- STRING/BINSTRING/SHORT_BINSTRING operands where scanners track unicode only;
- decoy strings pushed and popped before the real STACK_GLOBAL operands;
- BUILD setting attributes on an imported object, then a dotted global reading them
  back (protectai/modelscan#85);
- the copyreg extension registry (EXT1/2/4);
- a torch zip whose first ``*data.pkl`` is a decoy, duplicate member names, extra
  members, torch's old tar format, a legacy file whose payload is in a later pickle,
  bytes after a bare pickle.
"""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tune2serve.components.checkpoint.pickle_scan import LEGACY_MAGIC, unsafe_globals
from tune2serve.components.errors import UnsafePickleError

from tests.fuzz.conftest import FUZZ, assert_refused, run_validate

BIN = "pytorch_model.bin"


def _s(op: str, text: str) -> bytes:
    """One string push with the given opcode family."""
    raw = text.encode()
    return {
        "SHORT_BINUNICODE": b"\x8c" + bytes([len(raw)]) + raw,
        "BINUNICODE": b"X" + struct.pack("<I", len(raw)) + raw,
        "UNICODE": b"V" + raw + b"\n",
        "STRING": b"S'" + raw + b"'\n",
        "BINSTRING": b"T" + struct.pack("<I", len(raw)) + raw,
        "SHORT_BINSTRING": b"U" + bytes([len(raw)]) + raw,
    }[op]


STRING_OPS = ["SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"]


def _call(marker: Path) -> bytes:
    """Arguments and REDUCE: ``<global>("touch MARKER")``."""
    return _s("BINUNICODE", f"touch {marker}") + b"\x85R."


def _stack_global(marker: Path, op: str = "BINUNICODE") -> bytes:
    return b"\x80\x04" + _s(op, "os") + _s(op, "system") + b"\x93" + _call(marker)


def memo_confusion(marker: Path) -> bytes:
    # picklescan#14: mixing BINPUT and MEMOIZE so a last-N-strings scanner sees torch names
    return (b"\x80\x04" + _s("BINSTRING", "os") + b"q\x00" + _s("BINSTRING", "system") + b"q\x01"
            + _s("BINUNICODE", "torch._utils") + b"\x94" + _s("BINUNICODE", "_rebuild_tensor_v2") + b"\x94"
            + b"00" + b"00" + b"h\x00h\x01\x93" + _call(marker))


def memo_out_of_order(marker: Path) -> bytes:
    # picklescan#23: PUT into high slots, safe names in low ones, GET the high ones
    return (b"V" b"os\np2\n0" b"Vsystem\np3\n0" b"Vtorch\np0\n0" b"VLongStorage\np1\n0"
            b"g2\ng3\n\x93" + b"(" + _s("UNICODE", f"touch {marker}") + b"tR.")


def decoys(marker: Path) -> bytes:
    # the real operands pushed first, decoys pushed and popped after them
    return (b"\x80\x04" + _s("BINUNICODE", "os") + _s("BINUNICODE", "system")
            + _s("BINUNICODE", "torch") + _s("BINUNICODE", "FloatStorage") + b"00" + b"\x93" + _call(marker))


def build_then_dotted(marker: Path) -> bytes:
    # modelscan#85: BUILD writes attributes on an allowed global, a dotted name reads them
    return (b"\x80\x04ctorch\nSize\n" + b"N}" + _s("UNICODE", "a") + _s("UNICODE", "os") + b"s\x86b0"
            + b"ctorch\nSize.a\n" + _call(marker))


def ext_opcode(marker: Path) -> bytes:
    return b"\x80\x02\x82\x01" + _call(marker)


def inst_opcode(marker: Path) -> bytes:
    return b"(" + _s("UNICODE", f"touch {marker}") + b"ios\nsystem\n."


def obj_opcode(marker: Path) -> bytes:
    return b"(cos\nsystem\n" + _s("UNICODE", f"touch {marker}") + b"o."


def legacy_later_pickle(marker: Path) -> bytes:
    # torch's legacy format: the payload in the 4th pickle (the state dict)
    out = io.BytesIO()
    for obj in (LEGACY_MAGIC, 1001, {"protocol_version": 1001}):
        pickle.dump(obj, out, protocol=2)
    return out.getvalue() + _stack_global(marker)[2:] + pickle.dumps([], protocol=2)


def bytes_after_bare(marker: Path) -> bytes:
    return pickle.dumps({}, protocol=2) + _stack_global(marker)


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return out.getvalue()


def zip_decoy_first(marker: Path) -> bytes:
    # the first *data.pkl is clean; torch reads <archive>/data.pkl, the evil one
    clean = pickle.dumps({}, protocol=2)
    return _zip([("archive/version", b"3\n"), ("decoy/data.pkl", clean), ("archive/data.pkl", _stack_global(marker))])


def zip_duplicate(marker: Path) -> bytes:
    clean = pickle.dumps({}, protocol=2)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        return _zip([("archive/data.pkl", clean), ("archive/data.pkl", _stack_global(marker))])


def zip_torchscript(marker: Path) -> bytes:
    return _zip([("archive/data.pkl", pickle.dumps({}, protocol=2)), ("archive/constants.pkl", _stack_global(marker))])


def tar_format(marker: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = _stack_global(marker)
        info = tarfile.TarInfo("pickle")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


BYPASSES = [memo_confusion, memo_out_of_order, decoys, build_then_dotted, ext_opcode, inst_opcode, obj_opcode,
            legacy_later_pickle, bytes_after_bare, zip_decoy_first, zip_duplicate, zip_torchscript, tar_format,
            *[(lambda op: (lambda m: _stack_global(m, op)))(op) for op in STRING_OPS]]


def _refused(data: bytes) -> bool:
    try:
        return bool(unsafe_globals(data))
    except UnsafePickleError:
        return True


@pytest.mark.parametrize("make", BYPASSES, ids=lambda f: getattr(f, "__name__", "stack_global"))
def test_every_public_bypass_is_refused_by_validate(make, tiny_llama_bin: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "MARKER"
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_llama_bin, folder)
    (folder / BIN).write_bytes(make(marker))

    code, doc, err = run_validate(folder, capsys)

    assert_refused(code, doc, err, BIN)
    assert {f["code"] for f in doc["findings"] if f["file"] == BIN} & {"unsafe-pickle", "pickle-corrupt"}
    assert not marker.exists()


def test_the_real_checkpoint_still_passes(tiny_llama_bin: Path) -> None:
    assert unsafe_globals((tiny_llama_bin / BIN).read_bytes()) == []


@FUZZ
@given(
    module_op=st.sampled_from(STRING_OPS), name_op=st.sampled_from(STRING_OPS),
    decoys=st.lists(st.sampled_from(["torch", "FloatStorage", "collections", "OrderedDict"]), max_size=4),
    via_memo=st.booleans(), memo_op=st.sampled_from([b"q", b"\x94", b"p"]),
    target=st.sampled_from([("os", "system"), ("builtins", "exec"), ("subprocess", "getoutput"),
                            ("torch", "load"), ("torch._utils", "_rebuild_tensor_v2.__globals__")]),
)
def test_generated_stack_global_variants_are_refused(module_op: str, name_op: str, decoys: list[str], via_memo: bool,
                                                     memo_op: bytes, target: tuple[str, str], tmp_path: Path) -> None:
    """Operands from any string opcode, decoys pushed and popped around them, stored to
    and replayed from the memo by any memo opcode: the scan names the real global."""
    marker = tmp_path / "MARKER"
    body = b"\x80\x04"
    slots = []
    for i, (op, text) in enumerate(((module_op, target[0]), (name_op, target[1]))):
        body += _s(op, text)
        if via_memo:
            body += {b"q": b"q" + bytes([i]), b"\x94": b"\x94", b"p": b"p%d\n" % i}[memo_op] + b"0"
            slots.append(i)
        for d in decoys:
            body += _s("BINUNICODE", d) + b"0"
    for i in slots:
        body += b"h" + bytes([i])
    data = body + b"\x93" + _call(marker)
    try:
        bad = unsafe_globals(data)
    except UnsafePickleError:
        bad = ["refused"]
    assert bad and (f"{target[0]}.{target[1]}" in bad or bad == ["refused"])
    assert not marker.exists()
