"""Trainer outputs whose tools cannot run here, built by hand in their documented layouts
around real tensors from PEFT: torchtune's LoRA recipe (``FullModelHFCheckpointer``) and
the HF Trainer under DeepSpeed ZeRO-2/3.

The training state beside the model (torchtune's ``recipe_state/recipe_state.pt``,
DeepSpeed's ``global_stepN/*.pt``) is a hostile pickle here: the export must succeed
without ever loading it (the payload would leave a marker), and copy none of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import assert_matches, assert_nothing_published, hostile_pickle, make_adapter, peft_merged, read_export
from tests.export.test_producers import _trainer_checkpoint
from tune2serve.components.export.export import export_checkpoint

# What torchtune's copy_files carries from the input checkpoint_dir into each epoch_N/
# (it skips *.safetensors, *.bin, *.pt, *.pth and the index/adapter names).
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
EPOCHS = (0, 2, 10)  # epoch_10 sorts before epoch_2 by name


def _torchtune_epoch(base: Path, epoch_dir: Path, adapter: Path, merged: dict[str, Any] | None) -> None:
    """One ``epoch_N/`` of torchtune's LoRA recipe with the HF checkpointer: the adapter
    in PEFT format (``adapter_model.safetensors`` and a minimal ``adapter_config.json``
    naming the hub repo), the same in torchtune's own names (``adapter_model.pt``), and,
    unless ``save_adapter_weights_only``, the merged weights in the base's shard layout
    (``model-0000i-of-0000N.safetensors`` + index)."""
    import torch
    from safetensors.torch import load_file, save_file

    epoch_dir.mkdir(parents=True)
    for name in COPIED:
        shutil.copy(base / name, epoch_dir / name)
    peft_cfg = json.loads((adapter / "adapter_config.json").read_text())
    (epoch_dir / "adapter_config.json").write_text(json.dumps({
        "r": peft_cfg["r"], "lora_alpha": peft_cfg["lora_alpha"], "target_modules": sorted(peft_cfg["target_modules"]),
        "peft_type": "LORA", "base_model_name_or_path": "meta-llama/Llama-3.2-1B"}))
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    save_file(tensors, str(epoch_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    tune_names = {k.replace("base_model.model.model.", "").replace("self_attn", "attn").replace("lora_A", "lora_a")
                  .replace("lora_B", "lora_b"): v for k, v in tensors.items()}
    torch.save(tune_names, epoch_dir / "adapter_model.pt")
    if merged is not None:
        shard = "model-00001-of-00001.safetensors"
        save_file({k: v.contiguous() for k, v in merged.items()}, str(epoch_dir / shard), metadata={"format": "pt"})
        (epoch_dir / "model.safetensors.index.json").write_text(json.dumps({
            "metadata": {"total_size": sum(v.numel() * v.element_size() for v in merged.values())},
            "weight_map": {k: shard for k in merged}}))


@pytest.mark.parametrize("weights_too", [False, True], ids=["adapter-only", "merged-weights"])
def test_torchtune_lora_recipe_output(weights_too: bool, tiny_llama: Path, tmp_path: Path, validate_ok: Any) -> None:
    """``latest`` is the highest epoch and ``--checkpoint 2`` epoch_2. An adapter-only
    epoch is merged into --base-model (= PEFT's merge); an epoch holding torchtune's
    merged weights is exported as those weights (the adapter beside them is not merged
    a second time). recipe_state.pt is never loaded nor copied."""
    out = tmp_path / "torchtune"
    expected: dict[int, dict[str, Any]] = {}
    for epoch in EPOCHS:
        adapter = make_adapter(tiny_llama, tmp_path / f"peft-{epoch}", seed=epoch + 1, r=4, lora_alpha=8,
                               target_modules=["q_proj", "v_proj"])
        expected[epoch] = peft_merged(tiny_llama, adapter)
        _torchtune_epoch(tiny_llama, out / f"epoch_{epoch}", adapter, expected[epoch] if weights_too else None)
    marker = tmp_path / "MARKER"
    (out / "recipe_state").mkdir()
    hostile_pickle(out / "recipe_state" / "recipe_state.pt", marker, {"epochs_run": 10, "seed": 0, "total_epochs": 11})
    for choice, epoch in (("latest", 10), ("2", 2)):
        dest = tmp_path / f"export-{choice}"
        result = export_checkpoint(str(out), str(dest), base_model=str(tiny_llama), checkpoint=choice)
        assert f"epoch_{epoch}" in result.explanation and ("full weights" if weights_too else "LoRA adapter") in result.explanation
        assert (result.merge is None) is weights_too
        assert_matches(read_export(dest), expected[epoch], tied=False, atol=0 if weights_too else 1e-6)
        written = {p.name for p in dest.rglob("*")}
        assert not written & {"recipe_state.pt", "adapter_model.pt", "adapter_model.safetensors", "adapter_config.json"}
        validate_ok(dest)
    assert not marker.exists()


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_lora_checkpoint_exports_the_adapter(stage: int, tiny_llama: Path, tmp_path: Path,
                                                          validate_ok: Any) -> None:
    """HF Trainer + PEFT under DeepSpeed ZeRO-2/3 (with stage3_gather_16bit_weights_on_model_save):
    checkpoint-N/ holds the gathered adapter beside global_stepN/ (model and optimizer
    states per rank), ``latest`` and ``zero_to_fp32.py``. The export merges the adapter
    (= PEFT's merge) and never loads or copies the DeepSpeed state."""
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    out = tmp_path / "run"
    marker = tmp_path / "MARKER"
    for step in (2, 4):
        ckpt = _trainer_checkpoint(tiny_llama, out, step)
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copy(adapter / name, ckpt / name)
        hostile_pickle(ckpt / "training_args.bin", marker)
        hostile_pickle(ckpt / "rng_state_0.pth", marker)
        states = ckpt / f"global_step{step}"
        states.mkdir()
        model_states = "mp_rank_00_model_states.pt" if stage == 2 else "zero_pp_rank_0_mp_rank_00_model_states.pt"
        hostile_pickle(states / model_states, marker, {"ds_version": "0.16.4", "buffer_names": [], "mp_world_size": 1})
        for rank in (0, 1):
            hostile_pickle(states / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", marker,
                           {"optimizer_state_dict": {"zero_stage": stage, "partition_count": 2}})
        (ckpt / "latest").write_text(f"global_step{step}")
        (ckpt / "zero_to_fp32.py").write_text("#!/usr/bin/env python\n# DeepSpeed's consolidation script\n")
    result = export_checkpoint(str(out), str(tmp_path / "dest"), base_model=str(tiny_llama), checkpoint="latest")
    assert result.source_kind == "hf-trainer" and "checkpoint-4" in result.explanation and result.merge is not None
    assert_matches(read_export(tmp_path / "dest"), peft_merged(tiny_llama, adapter), tied=False)
    written = {p.relative_to(tmp_path / "dest").as_posix() for p in (tmp_path / "dest").rglob("*")}
    assert not [n for n in written if n.startswith("global_step") or n.endswith((".pt", ".pth", ".bin", ".py"))
                or n in ("latest", "trainer_state.json")], written
    assert not marker.exists()
    validate_ok(tmp_path / "dest")


@pytest.mark.parametrize("saved", ["no-tensors", "empty-shards"])
def test_deepspeed_zero3_ungathered_adapter_is_refused(saved: str, tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    """ZeRO-3 without stage3_gather_16bit_weights_on_model_save: the Trainer saves the
    PeftModel with ``state_dict={}`` (an adapter file without tensors), and a state dict
    taken without gathering holds shape-[0] shards. Either, merged, is the base model
    unchanged; refused naming the file and the setting, nothing written."""
    import torch
    from safetensors.torch import load_file, save_file

    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    out = tmp_path / "run"
    ckpt = _trainer_checkpoint(tiny_llama, out, 4)
    shutil.copy(adapter / "adapter_config.json", ckpt / "adapter_config.json")
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({} if saved == "no-tensors" else {k: torch.empty(0) for k in tensors}, str(ckpt / "adapter_model.safetensors"))
    (ckpt / "global_step4").mkdir()
    hostile_pickle(ckpt / "global_step4" / "zero_pp_rank_0_mp_rank_00_model_states.pt", tmp_path / "MARKER")
    code, _doc, err = cli("export", out, tmp_path / "dest", "--base-model", tiny_llama)
    assert code == 1, err
    assert "checkpoint-4/adapter_model.safetensors" in err and "stage3_gather_16bit_weights_on_model_save" in err
    assert ("holds no tensors" if saved == "no-tensors" else "holds empty tensors") in err and "Traceback" not in err
    assert_nothing_published(tmp_path / "dest")
    assert not (tmp_path / "MARKER").exists()
