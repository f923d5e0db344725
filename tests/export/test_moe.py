"""``export/merge/moe.py``'s streaming merge of parameter-level LoRA on fused experts: each
on-disk expert tensor's update is made when asked, one expert at a time, and nothing is
held once it has been taken — with PEFT's ``merge_and_unload()`` as the oracle of every
value (tiny random models made here, as in ``test_architectures``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import read_export
from tests.export.test_architectures import ARCHITECTURES, _adapter, _build
from tune2serve.components.checkpoint.tensor_reader import CheckpointTensors
from tune2serve.components.export.export import export_checkpoint
from tune2serve.components.export.merge.merge import read_adapter
from tune2serve.components.export.merge.moe import plan_param_lora, split_param_lora
from tune2serve.components.export.plan.names import DiskNames


def _made(class_name: str, tmp_path: Path, tiny_llama: Path, **lora: Any) -> tuple[Path, Path, dict[str, Any]]:
    """(base folder, adapter folder, PEFT's merge renamed to the on-disk names)."""
    from tune2serve.components.export.plan.weight_conversion import revert_weight_conversion

    kwargs, _ = ARCHITECTURES[class_name]
    model = _build(class_name, {**kwargs, "num_local_experts": 4}, tmp_path / "base", tiny_llama)
    peft_model, adapter = _adapter(tmp_path / "base", model, tmp_path / "adapter", **lora)
    merged = peft_model.merge_and_unload()
    return tmp_path / "base", adapter, revert_weight_conversion(merged, dict(merged.state_dict()))


@pytest.mark.parametrize("class_name, lora, per_slab", [
    ("MixtralForCausalLM", {"target_modules": "all-linear"}, "one on-disk expert tensor"),
    ("GptOssForCausalLM", {"target_modules": ["q_proj"],
                           "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]}, "one expert row"),
])
def test_expert_updates_come_one_expert_at_a_time(class_name: str, lora: dict[str, Any], per_slab: str,
                                                   tiny_llama: Path, tmp_path: Path) -> None:
    import torch

    base_dir, adapter, oracle = _made(class_name, tmp_path, tiny_llama, **lora)
    options, tensors = read_adapter(adapter, str(adapter))
    _, wrapped = split_param_lora(tensors)
    base = CheckpointTensors.open(base_dir)
    config = json.loads((base_dir / "config.json").read_text())
    deltas = plan_param_lora(wrapped, options, DiskNames(config), base.metas, str(adapter))
    assert deltas is not None and deltas.pieces
    modules = {key.split("|")[0] for key in wrapped}
    taken = most_held = 0
    for meta in sorted(base.metas.values(), key=lambda m: (m.file, m.offset)):  # the writer's order
        if meta.name not in deltas:
            continue
        slabs = list(deltas.slabs(meta.name))
        most_held = max(most_held, deltas.held)
        if per_slab == "one expert row":
            assert len(slabs) == meta.shape[0] == 4 and all(s.shape == (1, *meta.shape[1:]) for s in slabs)
        else:
            assert len(slabs) == 1 and tuple(slabs[0].shape) == tuple(meta.shape) and len(meta.shape) == 2
        got = base.read(meta.name).float() + torch.cat(slabs)
        ref = oracle[meta.name]
        assert torch.allclose(got, ref, atol=1e-6, rtol=0), f"{meta.name}: {(got - ref).abs().max().item()}"
        taken += 1
    assert most_held <= 1  # one expert's update (gate and up halves of one delta) at a time, never more
    assert deltas.held == 0  # everything taken: nothing left in memory
    assert taken == len(deltas.pieces) == (len(modules) * 4 * 3 if per_slab != "one expert row" else len(modules) * 2)
    base.close()


def test_fused_experts_from_a_bin_base_to_bfloat16(tiny_llama: Path, tmp_path: Path) -> None:
    """A ``.bin`` base (no mapping: the base tensor is read whole) and a dtype change:
    the same float32 sum, rounded once, as PEFT's float32 merge cast to bfloat16."""
    import torch
    from safetensors.torch import load_file

    base_dir, adapter, oracle = _made("MixtralForCausalLM", tmp_path, tiny_llama, target_modules="all-linear")
    torch.save(load_file(str(base_dir / "model.safetensors")), base_dir / "pytorch_model.bin")
    (base_dir / "model.safetensors").unlink()
    export_checkpoint(str(adapter), str(tmp_path / "out"), dtype="bfloat16")
    mine = read_export(tmp_path / "out")
    assert any(".experts.3.w2." in n for n in mine)
    for name, got in mine.items():
        ref = oracle[name].to(torch.bfloat16)
        assert got.dtype == torch.bfloat16
        assert torch.allclose(got.float(), ref.float(), atol=0, rtol=2**-8), name


class _TransposedOnDisk(DiskNames):
    """A base storing its fused experts transposed, as transformers' ``Transpose(1, 2)``
    converter does for some MoE classes: no expert-by-expert split of the revert applies."""

    def revert(self, tensors: dict[str, Any]) -> dict[str, Any]:
        return {n: t.transpose(1, 2).contiguous() if n.endswith("_proj") and t.dim() == 3 else t
                for n, t in super().revert(tensors).items()}


def test_an_unsplittable_conversion_merges_the_whole_parameter(tiny_llama: Path, tmp_path: Path) -> None:
    """The fallback: the update of the whole parameter at once, then the base's own
    conversion — still PEFT's ΔW, and nothing held once taken."""
    import dataclasses

    import torch

    kwargs, _ = ARCHITECTURES["GptOssForCausalLM"]
    model = _build("GptOssForCausalLM", kwargs, tmp_path / "base", tiny_llama)
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    peft_model, adapter = _adapter(tmp_path / "base", model, tmp_path / "adapter", target_modules=["q_proj"],
                                   target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    merged = peft_model.merge_and_unload().state_dict()
    options, tensors = read_adapter(adapter, str(adapter))
    _, wrapped = split_param_lora(tensors)
    base = CheckpointTensors.open(tmp_path / "base")
    metas = {n: dataclasses.replace(m, shape=(m.shape[0], m.shape[2], m.shape[1])) if n.endswith("_proj") and
             len(m.shape) == 3 else m for n, m in base.metas.items()}
    base.close()
    names = _TransposedOnDisk(json.loads((tmp_path / "base" / "config.json").read_text()))
    deltas = plan_param_lora(wrapped, options, names, metas, str(adapter))
    assert deltas is not None and len(deltas.pieces) == 4  # gate_up and down of 2 layers
    for name, piece in deltas.pieces.items():
        assert piece.groups == ((0, 3),)  # all the experts together
        (slab,) = deltas.slabs(name)
        ref = (merged[name] - before[name]).transpose(1, 2)
        assert torch.allclose(slab, ref, atol=1e-6, rtol=0), name
    assert deltas.held == 0
