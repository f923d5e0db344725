"""Pure pieces: the supported list, quantization policy, machine specs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tune2serve.components.errors import UsageError
from tune2serve.components.validate import ValidateOptions, validate_checkpoint
from tune2serve.components.validate.checks.quantization import native_quantization
from tune2serve.components.validate.memory import estimate_serving_memory, kv_bytes_per_token
from tune2serve.components.vertex.machine_spec import GIB, MachineSpec, parse_machine_spec, recommend_machine_spec
from tune2serve.components.validate.supported import load_supported
from tests.fixtures.broken_models import edit_json


def test_supported_list_is_versioned_data() -> None:
    raw = json.loads((Path(__file__).parents[2] / "components/validate/supported_models.json").read_text())
    assert raw["version"] and raw["source"]
    supported = load_supported()
    llama = supported.family_for("llama", [])
    assert llama is not None
    assert supported.match_size(llama, 8_030_261_248).name == "Llama-3.1-8B"
    assert supported.match_size(llama, 8_400_000_000).name == "Llama-3.1-8B"  # +4.6%: a resized vocabulary
    assert supported.match_size(llama, 5_000_000_000) is None
    assert supported.family_for(None, ["Qwen2ForCausalLM"]).family == "Qwen2 / Qwen2.5"
    assert supported.family_for("gpt2", ["GPT2LMHeadModel"]) is None


@pytest.mark.parametrize("model_type, method, native", [
    ("deepseek_v3", "fp8", True), ("gpt_oss", "mxfp4", True),
    ("llama", "fp8", False), ("deepseek_v3", "gptq", False), ("gpt_oss", "fp8", False), ("qwen2", "awq", False),
])
def test_native_quantization_pairs(model_type: str, method: str, native: bool) -> None:
    assert native_quantization(model_type, method) is native


def test_native_fp8_is_an_info_not_an_error(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_llama, folder)
    edit_json(folder / "config.json", lambda d: d.update(model_type="deepseek_v3", architectures=[
        "DeepseekV3ForCausalLM"], quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]}))
    report = validate_checkpoint(str(folder))
    assert "native-quantization" in report.codes("info")
    assert "quantized-user" not in report.codes() and "quantized-weights" not in report.codes()


@pytest.mark.parametrize("args, expected", [
    ((None, None, None), None),
    (("", "", 0), None),
    (("g2-standard-24", "NVIDIA_L4", 2), MachineSpec("g2-standard-24", "NVIDIA_L4", 2)),
    (("a2-ultragpu-1g", "NVIDIA_A100_80GB", 1), MachineSpec("a2-ultragpu-1g", "NVIDIA_A100_80GB", 1)),
])
def test_parse_machine_spec(args: tuple, expected: MachineSpec | None) -> None:
    assert parse_machine_spec(*args) == expected


@pytest.mark.parametrize("args", [
    ("g2-standard-12", None, None), (None, "NVIDIA_L4", 1), ("a2-highgpu-1g", "NVIDIA_A100_80GB", 1),
    ("a3-highgpu-8g", "NVIDIA_H100_80GB", 4), ("g2-standard-12", "NVIDIA_T4", 1),
])
def test_inconsistent_specs_are_usage_errors(args: tuple) -> None:
    with pytest.raises(UsageError):
        parse_machine_spec(*args)


def test_recommendation_is_the_smallest_spec_that_fits() -> None:
    assert recommend_machine_spec(10 * GIB) == MachineSpec("g2-standard-12", "NVIDIA_L4", 1)
    assert recommend_machine_spec(30 * GIB) == MachineSpec("a2-highgpu-1g", "NVIDIA_TESLA_A100", 1)
    assert recommend_machine_spec(60 * GIB) == MachineSpec("a2-ultragpu-1g", "NVIDIA_A100_80GB", 1)
    assert recommend_machine_spec(700 * GIB) is None


def test_kv_cache_per_token() -> None:
    llama70 = {"num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "hidden_size": 8192}
    assert kv_bytes_per_token(llama70) == 2 * 80 * 8 * 128 * 2
    deepseek = {"num_hidden_layers": 61, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "num_attention_heads": 128}
    assert kv_bytes_per_token(deepseek) == 61 * 576 * 2
    assert estimate_serving_memory(100, llama70).kv_cache_bytes == 2 * 80 * 8 * 128 * 2 * 16384


def test_strict_promotes_every_warning(tiny_llama: Path) -> None:
    report = validate_checkpoint(str(tiny_llama), ValidateOptions(strict=True))
    assert report.codes("warning") == [] and report.codes("error") == ["size-not-listed"]
