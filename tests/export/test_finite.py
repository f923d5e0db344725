"""A poisoned adapter never ships: NaN/Inf adapter weights, or an update that
overflows the output dtype, fail the export naming the tensor, nothing published;
an ordinary adapter's export is unchanged (the merge oracle tests cover its values).
The check covers the cast: a merged value finite in float32 but beyond bfloat16's
(3.3895e38) or float16's (65504) largest value is refused — whether the cast would make
it ±Inf or clip it — on every streaming path (row blocks, whole tensors, conversions,
fused experts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.errors import MergeError
from tune2serve.components.export.merge.finite import check_finite

from tests.export.conftest import assert_nothing_published, make_adapter


@pytest.fixture(scope="module")
def adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_llama, tmp_path_factory.mktemp("finite") / "a", r=4, lora_alpha=8,
                        target_modules=["q_proj", "v_proj"])


def _poison(adapter: Path, out: Path, value: float) -> tuple[Path, str]:
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, out)
    tensors = load_file(out / "adapter_model.safetensors")
    name = sorted(n for n in tensors if "lora_B" in n and "q_proj" in n)[0]
    tensors[name][0, :] = value  # one output row: s·Σ_k B[0,k]·A[k,j] overflows where the value is large
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    return out, name


@pytest.mark.parametrize("value, dtype, says", [(float("nan"), "auto", "non-finite"), (float("inf"), "auto", "non-finite"),
                                                (1e6, "float16", "beyond float16's range")])  # finite in float32
def test_non_finite_merge_fails_with_the_tensor_name(value: float, dtype: str, says: str, adapter: Path,
                                                     tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    poisoned, lora_name = _poison(adapter, tmp_path / "poisoned", value)
    layer = lora_name.split(".layers.")[1].split(".")[0]

    code, _, err = cli("export", poisoned, tmp_path / "dest", "--base-model", tiny_llama, "--dtype", dtype)

    assert code == 1, err
    assert f"model.layers.{layer}.self_attn.q_proj.weight" in err and says in err
    assert "Traceback" not in err
    assert_nothing_published(tmp_path / "dest")


def test_check_finite_passes_large_but_finite_bf16_blocks() -> None:
    import torch

    block = torch.full((4, 4), 3.0e38, dtype=torch.bfloat16)  # its float32 sum overflows; the values do not
    check_finite(block, "w")
    block[1, 2] = float("inf")
    with pytest.raises(MergeError, match=r"tensor w: .*1 non-finite values \(0 NaN, 1 ±Inf\)"):
        check_finite(block, "w")


def test_adapter_config_nan_alpha_is_refused_before_merging(adapter: Path, tiny_llama: Path, tmp_path: Path,
                                                            cli: Any) -> None:
    import shutil

    shutil.copytree(adapter, tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    cfg["alpha_pattern"] = {"q_proj": float("nan")}
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(cfg))
    code, _, err = cli("export", tmp_path / "a", tmp_path / "dest", "--base-model", tiny_llama)
    assert code == 1 and "alpha_pattern['q_proj'] = nan must be a finite number" in err


BF16_MAX, F16_MAX = 3.3895313892515355e38, 65504.0
Q0 = "model.layers.0.self_attn.q_proj.weight"


def _near_the_limit(tiny_llama: Path, adapter: Path, out: Path, base_dtype: str, value: float,
                    delta: float) -> tuple[Path, Path]:
    """A base whose q_proj row 0 of layer 0 is ``value`` (stored as ``base_dtype``) and an
    adapter whose update is exactly ``delta`` on that row and 0 elsewhere: the merged row,
    in float32, is ``value + delta``."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    base, lora = out / "base", out / "adapter"
    shutil.copytree(tiny_llama, base)
    shutil.copytree(adapter, lora)
    dtype = getattr(torch, base_dtype)
    weights = {n: t.to(dtype) if t.is_floating_point() else t for n, t in load_file(base / "model.safetensors").items()}
    weights[Q0][0, :] = value
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((base / "config.json").read_text())
    config.pop("torch_dtype", None)
    config["dtype"] = base_dtype
    (base / "config.json").write_text(json.dumps(config))
    tensors = load_file(lora / "adapter_model.safetensors")
    cfg = json.loads((lora / "adapter_config.json").read_text())
    scaling = cfg["lora_alpha"] / cfg["r"]
    for name in tensors:
        tensors[name].zero_()
    a = next(n for n in tensors if ".layers.0.self_attn.q_proj.lora_A" in n)
    tensors[a][0, :] = 1.0
    tensors[a.replace("lora_A", "lora_B")][0, 0] = delta / scaling  # ΔW[0, j] = s·B[0,0]·A[0,j] = delta
    save_file(tensors, lora / "adapter_model.safetensors", metadata={"format": "pt"})
    cfg["base_model_name_or_path"] = str(base)
    (lora / "adapter_config.json").write_text(json.dumps(cfg))
    return base, lora


@pytest.mark.parametrize("base_dtype, dtype, value, delta, target", [
    ("bfloat16", "auto", 3.0e38, 0.397e38, "bfloat16"),    # row blocks in bf16: the cast would give +Inf
    ("float32", "bfloat16", 3.0e38, 0.397e38, "bfloat16"),  # whole tensor converted: +Inf
    ("float32", "bfloat16", 3.0e38, 0.392e38, "bfloat16"),  # just past the max: the cast would clip it
    ("float16", "auto", 60000.0, 6000.0, "float16"),        # row blocks in fp16: 66000 -> +Inf
    ("float32", "float16", 60000.0, 5510.0, "float16"),     # 65510: clipped to 65504
    ("float32", "float16", -60000.0, -6000.0, "float16"),   # and below the negative limit
])
def test_a_merge_beyond_the_output_dtype_is_refused_naming_the_tensor(
        base_dtype: str, dtype: str, value: float, delta: float, target: str, adapter: Path, tiny_llama: Path,
        tmp_path: Path, cli: Any) -> None:
    base, lora = _near_the_limit(tiny_llama, adapter, tmp_path, base_dtype, value, delta)
    code, _, err = cli("export", lora, tmp_path / "dest", "--base-model", base, "--dtype", dtype)
    assert code == 1, err
    assert f"tensor {Q0}" in err and f"beyond {target}'s range" in err and "Traceback" not in err
    assert_nothing_published(tmp_path / "dest")


@pytest.mark.parametrize("base_dtype, dtype, value, delta", [
    ("float32", "bfloat16", 3.0e38, 0.38e38), ("bfloat16", "auto", 3.0e38, 0.3e38),
    ("float32", "float16", 60000.0, 5000.0), ("float16", "auto", -60000.0, -5000.0),
])
def test_a_merge_just_inside_the_range_exports_finite(base_dtype: str, dtype: str, value: float, delta: float,
                                                      adapter: Path, tiny_llama: Path, tmp_path: Path,
                                                      cli: Any) -> None:
    """The limit is the dtype's own largest value, not a margin below it: huge but
    representable weights export, as the cast of their float32 sum."""
    import torch

    from tests.export.conftest import read_export

    base, lora = _near_the_limit(tiny_llama, adapter, tmp_path, base_dtype, value, delta)
    code, _, err = cli("export", lora, tmp_path / "dest", "--base-model", base, "--dtype", dtype)
    assert code == 0, err
    row = read_export(tmp_path / "dest")[Q0][0]
    expected = torch.tensor(float(torch.tensor(value, dtype=getattr(torch, base_dtype))) + delta).to(row.dtype)
    assert bool(torch.isfinite(row).all()) and bool((row == expected).all())


def test_a_plain_conversion_beyond_the_range_is_refused(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    """No adapter: --dtype bfloat16 of a float32 checkpoint holding a value bf16 cannot
    hold is refused by name; kept as float32, the same checkpoint exports."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_llama, tmp_path / "src")
    weights = load_file(tmp_path / "src" / "model.safetensors")
    weights[Q0][3, 5] = 3.395e38
    save_file(weights, tmp_path / "src" / "model.safetensors", metadata={"format": "pt"})
    code, _, err = cli("export", tmp_path / "src", tmp_path / "bf16", "--dtype", "bfloat16")
    assert code == 1 and f"tensor {Q0}: 1 values are finite in float32 but beyond bfloat16's range" in err, err
    assert_nothing_published(tmp_path / "bf16")
    code, _, err = cli("export", tmp_path / "src", tmp_path / "f32", "--dtype", "float32")
    assert code == 0, err


def test_fused_experts_beyond_bfloat16_are_refused(tiny_llama: Path, tmp_path: Path) -> None:
    """The expert-by-expert path (a parameter-level LoRA on gpt-oss's fused experts)
    checks each expert's float32 sum against the output dtype before its cast."""
    import torch
    from safetensors.torch import load_file, save_file

    from tests.export.test_moe import _made
    from tune2serve.components.export.export import export_checkpoint

    base_dir, adapter, _ = _made("GptOssForCausalLM", tmp_path, tiny_llama, target_modules=["q_proj"],
                                 target_parameters=["mlp.experts.down_proj"])
    weights = load_file(str(base_dir / "model.safetensors"))
    name = next(n for n in weights if n.endswith("mlp.experts.down_proj"))
    weights = {n: t.float() if t.is_floating_point() else t for n, t in weights.items()}
    weights[name][2, 0, 0] = 3.395e38  # expert 2: finite in float32, beyond bfloat16
    save_file(weights, str(base_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MergeError, match=rf"tensor {name} \(rows 2\.\.3\): 1 values are finite in float32 but "
                                         r"beyond bfloat16's range"):
        export_checkpoint(str(adapter), str(tmp_path / "out"), dtype="bfloat16")
    assert_nothing_published(tmp_path / "out")
    assert torch.finfo(torch.bfloat16).max == BF16_MAX


_DTYPES = {"bfloat16": BF16_MAX, "float16": F16_MAX, "float32": 3.4028234663852886e38}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(_DTYPES)), st.lists(st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([BF16_MAX, -BF16_MAX, F16_MAX, -F16_MAX, 65505.0, 65519.0, 65520.0, 3.3896e38, 3.3961e38]),
    st.floats(-1.0, 1.0, width=32)), min_size=1, max_size=40))
def test_check_finite_refuses_exactly_what_the_cast_cannot_hold(out: str, values: list[float]) -> None:
    """Refused iff a value is NaN/Inf or its magnitude exceeds the output dtype's
    largest finite value; what passes casts to finite values, none clipped."""
    import torch

    block = torch.tensor(values, dtype=torch.float32)
    target = getattr(torch, out)
    bad = bool((~torch.isfinite(block)).any()) or bool((block.abs() > _DTYPES[out]).any())
    if bad:
        with pytest.raises(MergeError, match=r"^tensor w:"):
            check_finite(block, "w", None, target)
    else:
        check_finite(block, "w", None, target)
        cast = block.to(target)
        assert bool(torch.isfinite(cast).all())
        assert bool((cast.float().abs() <= _DTYPES[out]).all())
