"""The adapter to transformers' ``revert_weight_conversion`` (no public API gives the
names ``save_pretrained`` writes): what it does on the locked transformers, pinned on a
tiny Mixtral and a tiny Llama built on the meta device, and the loud, named failure when a
transformers release moves the function or changes what it takes."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from tune2serve.components.export.plan import weight_conversion
from tune2serve.components.export.plan.names import DiskNames
from tune2serve.components.export.plan.weight_conversion import INTERNAL, revert_weight_conversion

SIZES = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 128}
CHANGED = (f"transformers changed {INTERNAL}, which export names tensors by: review "
           "components/export/plan/weight_conversion.py before moving the transformers pin")


def _meta(class_name: str, **config: Any) -> Any:
    import torch
    import transformers

    cls = getattr(transformers, class_name)
    with torch.device("meta"):
        return cls(cls.config_class(**SIZES, **config))


def test_mixtral_router_is_renamed_and_fused_experts_split_as_save_pretrained_writes() -> None:
    model = _meta("MixtralForCausalLM", num_local_experts=3)
    in_memory = {n: tuple(t.shape) for n, t in model.state_dict().items() if ".layers.0.mlp." in n}
    assert in_memory == {"model.layers.0.mlp.gate.weight": (3, 64),
                         "model.layers.0.mlp.experts.gate_up_proj": (3, 192, 64),
                         "model.layers.0.mlp.experts.down_proj": (3, 64, 96)}, CHANGED
    on_disk = {n: tuple(t.shape) for n, t in revert_weight_conversion(model, model.state_dict()).items()
               if ".layers.0." in n and "block_sparse_moe" in n}
    expected = {"model.layers.0.block_sparse_moe.gate.weight": (3, 64)}
    for e in range(3):
        expected |= {f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight": (96, 64),
                     f"model.layers.0.block_sparse_moe.experts.{e}.w2.weight": (64, 96),
                     f"model.layers.0.block_sparse_moe.experts.{e}.w3.weight": (96, 64)}
    assert on_disk == expected, CHANGED


def test_a_model_without_conversions_keeps_its_names() -> None:
    model = _meta("LlamaForCausalLM")
    assert set(revert_weight_conversion(model, model.state_dict())) == set(model.state_dict()), CHANGED


def test_export_maps_the_router_name_one_to_one() -> None:
    config = {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "num_local_experts": 3, **SIZES}
    names = DiskNames(config)
    assert names.to_disk("model.layers.0.mlp.gate.weight") == "model.layers.0.block_sparse_moe.gate.weight", CHANGED
    assert names.to_disk("model.layers.0.mlp.experts.gate_up_proj") is None  # split, not renamed


def test_a_transformers_without_the_function_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.core_model_loading as internal

    monkeypatch.delattr(internal, "revert_weight_conversion")
    with pytest.raises(ImportError, match=rf"transformers {transformers_version()}: {INTERNAL}, .* is gone"):
        revert_weight_conversion(_meta("LlamaForCausalLM"), {})
    with pytest.raises(ImportError, match="is gone"):  # export says so, instead of mapping nothing
        DiskNames({"model_type": "llama", "architectures": ["LlamaForCausalLM"], **SIZES}).to_disk("lm_head.weight")


def test_a_transformers_whose_function_takes_other_arguments_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.core_model_loading as internal

    def changed(model: Any, state_dict: dict[str, Any], mapping: Any) -> dict[str, Any]:
        return state_dict

    monkeypatch.setattr(internal, "revert_weight_conversion", changed)
    with pytest.raises(ImportError, match=r"now takes \('model', 'state_dict', 'mapping'\)"):
        weight_conversion.revert_function()
    assert tuple(inspect.signature(changed).parameters)[:2] == weight_conversion.PARAMETERS


def transformers_version() -> str:
    import transformers

    return str(transformers.__version__).replace(".", r"\.")
