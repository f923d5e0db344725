"""A poisoned adapter never ships: NaN/Inf adapter weights, or an update that
overflows the output dtype, fail the export naming the tensor, nothing published;
an ordinary adapter's export is unchanged (the merge oracle tests cover its values)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
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


@pytest.mark.parametrize("value, dtype", [(float("nan"), "auto"), (float("inf"), "auto"),
                                          (1e6, "float16")])  # the last: finite in float32, overflows the cast
def test_non_finite_merge_fails_with_the_tensor_name(value: float, dtype: str, adapter: Path, tiny_llama: Path,
                                                     tmp_path: Path, cli: Any) -> None:
    poisoned, lora_name = _poison(adapter, tmp_path / "poisoned", value)
    layer = lora_name.split(".layers.")[1].split(".")[0]

    code, _, err = cli("export", poisoned, tmp_path / "dest", "--base-model", tiny_llama, "--dtype", dtype)

    assert code == 1, err
    assert f"model.layers.{layer}.self_attn.q_proj.weight" in err and "non-finite" in err
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
