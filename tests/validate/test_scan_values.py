"""``validate --scan-values`` streams the weights and finds NaN/Inf; without the flag
validate reads headers only and cannot (the default stays fast)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from tune2serve.components.checkpoint.safetensors_header import read_header
from tune2serve.components.checkpoint.storage import LocalFolder


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_scan_values_finds_a_non_finite_weight(value: float, tiny_llama: Path, tmp_path: Path, run_cli: Any) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_llama, folder)
    header = read_header(LocalFolder(folder), "model.safetensors")
    t = next(t for t in sorted(header.tensors.values(), key=lambda t: t.name) if t.dtype == "F32" and "mlp" in t.name)
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.seek(8 + header.header_size + t.begin + 4 * 3)
        fh.write(struct.pack("<f", value))

    code, doc, _ = run_cli(str(folder))
    assert code == 0, doc["findings"]  # headers only: the value cannot be seen

    code, doc, err = run_cli(str(folder), "--scan-values")
    assert code == 1 and "Traceback" not in err
    bad = [f for f in doc["findings"] if f["code"] == "non-finite-weights"]
    assert bad and bad[0]["file"] == "model.safetensors" and t.name in bad[0]["message"]


def test_scan_values_passes_a_sound_checkpoint(tiny_llama: Path, run_cli: Any) -> None:
    code, doc, _ = run_cli(str(tiny_llama), "--scan-values")
    assert code == 0, doc["findings"]
