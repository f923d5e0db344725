"""Good tiny models pass; --strict turns the size warning into an error; the output
follows DESIGN.md §4."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tune2serve.components.checkpoint.manifest import Manifest, ManifestEntry, sha256_file
from tune2serve.components.validate import ValidateOptions, validate_checkpoint
from tune2serve.cli.main import main
from tests.fixtures.broken_models import edit_json


@pytest.mark.parametrize("name", ["llama", "qwen_sharded", "llama_bin"])
def test_good_model_is_deployable(name: str, good_models: dict[str, Path], run_cli) -> None:
    code, doc, err = run_cli(str(good_models[name]))
    assert code == 0
    assert set(doc) == {"ok", "source", "findings", "summary"}
    assert doc["ok"] is True and doc["source"] == str(good_models[name])
    assert [f["code"] for f in doc["findings"] if f["severity"] != "info"] == ["size-not-listed"]
    for f in doc["findings"]:
        assert set(f) == {"severity", "code", "message", "file"}
    assert "Traceback" not in err


def test_strict_makes_the_size_warning_an_error(good_models: dict[str, Path], run_cli) -> None:
    code, doc, _ = run_cli(str(good_models["llama"]), "--strict")
    assert code == 1
    assert [(f["severity"], f["code"]) for f in doc["findings"] if f["severity"] == "error"] == [
        ("error", "size-not-listed")]


def test_summary_figures_from_headers(good_models: dict[str, Path], run_cli) -> None:
    _, doc, _ = run_cli(str(good_models["qwen_sharded"]))
    s = doc["summary"]
    index = json.loads((good_models["qwen_sharded"] / "model.safetensors.index.json").read_text())
    assert s["parameters"] == index["metadata"]["total_parameters"]
    assert s["parameters_source"] == "safetensors headers"
    assert s["shards"] == 5 and s["weight_format"] == "safetensors"
    assert s["family"] == "Qwen2 / Qwen2.5" and s["model_type"] == "qwen2"
    assert s["recommended_machine_spec"] == {"machine_type": "g2-standard-12", "accelerator_type": "NVIDIA_L4",
                                             "accelerator_count": 1}
    assert s["errors"] == 0 and s["warnings"] == 1


def test_bin_parameters_are_estimated_from_config(good_models: dict[str, Path], tiny_llama: Path, run_cli) -> None:
    _, bin_doc, _ = run_cli(str(good_models["llama_bin"]))
    _, st_doc, _ = run_cli(str(tiny_llama))
    assert bin_doc["summary"]["parameters_source"] == "config estimate"
    assert bin_doc["summary"]["parameters"] == st_doc["summary"]["parameters"]  # same architecture, exact formula
    assert "params-estimated" in [f["code"] for f in bin_doc["findings"]]


def test_text_output_and_report_dir(good_models: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(good_models["llama"]), "--report-dir", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert code == 0
    assert "DEPLOYABLE with 1 warning" in out and "size-not-listed [config.json]" in out
    assert (tmp_path / "r" / "report.md").read_text().startswith("# Checkpoint validation")
    assert 'id="verdict"' in (tmp_path / "r" / "report.html").read_text()
    assert "report.html" in err


def test_memory_against_a_machine_spec(good_models: dict[str, Path], run_cli) -> None:
    code, doc, _ = run_cli(str(good_models["llama"]), "--machine-type", "g2-standard-12",
                           "--accelerator-type", "NVIDIA_L4", "--accelerator-count", "1")
    assert code == 0
    assert "memory-fits" in [f["code"] for f in doc["findings"]]
    assert doc["summary"]["machine_spec"]["machine_type"] == "g2-standard-12"


def test_memory_exceeding_the_spec_is_an_error(good_models: dict[str, Path], tmp_path: Path, run_cli) -> None:
    """A config claiming a 70B-class KV cache on one L4: the estimate says no."""
    folder = tmp_path / "ckpt"
    shutil.copytree(good_models["llama_bin"], folder)
    edit_json(folder / "config.json", lambda d: d.update(num_hidden_layers=80, hidden_size=8192,
                                                         intermediate_size=28672, num_attention_heads=64,
                                                         num_key_value_heads=8, vocab_size=128256, head_dim=128))
    code, doc, _ = run_cli(str(folder), "--machine-type", "g2-standard-12", "--accelerator-type", "NVIDIA_L4",
                           "--accelerator-count", "1")
    assert code == 1
    finding = next(f for f in doc["findings"] if f["code"] == "memory-exceeds-spec")
    # 70.6 B params × 2 bytes = 131.4 GiB + 5.0 GiB KV cache = 136.4 GiB. The smallest GPU
    # memory that holds it is 160 GB; of those specs 2 × A100 80 GB has the fewest GPUs
    # (0.9 × 160 − 2 × 1.5 = 141 GiB usable).
    assert "the smallest spec that fits is a2-ultragpu-2g" in finding["message"]
    assert doc["summary"]["parameters"] == 70553706496  # the config estimate equals Llama-3.1-70B's count


def test_verify_checksums(good_models: dict[str, Path], tmp_path: Path, run_cli) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(good_models["llama"], folder)
    entries = [ManifestEntry(p.name, p.stat().st_size, sha256_file(p)) for p in sorted(folder.iterdir())]
    (folder / "manifest.json").write_text(Manifest(files=entries).to_json())
    code, doc, _ = run_cli(str(folder), "--verify-checksums")
    assert code == 0 and "checksums-verified" in [f["code"] for f in doc["findings"]]

    config = folder / "config.json"
    config.write_text(config.read_text().replace('"llama"', '"llama" '))  # one byte longer
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    (folder / "model.safetensors").write_bytes(bytes(data))
    code, doc, _ = run_cli(str(folder), "--verify-checksums")
    found = {(f["code"], f["file"]) for f in doc["findings"]}
    assert code == 1
    assert ("checksum-size-mismatch", "config.json") in found
    assert ("checksum-mismatch", "model.safetensors") in found


def test_verify_checksums_without_manifest(good_models: dict[str, Path], run_cli) -> None:
    code, doc, _ = run_cli(str(good_models["llama"]), "--verify-checksums")
    assert code == 1 and ("manifest-missing", "manifest.json") in {(f["code"], f["file"]) for f in doc["findings"]}


def test_base_model_comparison(good_models: dict[str, Path], tmp_path: Path, run_cli) -> None:
    code, doc, _ = run_cli(str(good_models["llama"]), "--base-model", str(good_models["llama"]))
    assert code == 0 and "base-matches" in [f["code"] for f in doc["findings"]]

    # Qwen2 has q/k/v biases Llama lacks: as a "merged export" of a Qwen2 base, the Llama
    # folder misses them (vLLM would refuse it) and carries an lm_head the tied base has not.
    code, doc, _ = run_cli(str(good_models["llama"]), "--base-model", str(good_models["qwen_sharded"]))
    by_code = {f["code"]: f for f in doc["findings"]}
    assert code == 1
    assert "self_attn.q_proj.bias" in by_code["base-tensor-missing"]["message"]
    assert by_code["base-tensor-missing"]["severity"] == "error"
    assert by_code["base-tensor-extra"]["severity"] == "warning"
    assert "lm_head.weight" in by_code["base-tensor-extra"]["message"]
