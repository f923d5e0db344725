"""What trainers really write, exported or refused by name.

Real producers run here on tiny models (PEFT PiSSA/OLoRA initialisation, a PeftModel's
state dict saved as the model, torch.distributed.checkpoint for FSDP sharded state) and
the documented layouts of the others are built by hand (torchtune ``epoch_N/``,
DeepSpeed ``global_stepN/``). An export is compared with the *trained* model's logits;
a refusal must name the unsupported part and what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import assert_nothing_published, make_adapter, read_export
from tune2serve.components.errors import CheckpointError, MergeError
from tune2serve.components.export.export import export_checkpoint

IDS = [[5, 17, 33, 2, 99, 150, 7, 64]]


def _logits(model: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.tensor(IDS)).logits.float()


def _export_logits(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return _logits(AutoModelForCausalLM.from_pretrained(folder))


def _peft_model(base: Path, seed: int = 3, **lora: Any) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(**lora))
    with torch.no_grad():  # stands for training: make lora_B non-zero
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_embedding_" in name:  # an embedding LoRA starts with A = 0
                p.add_(torch.randn_like(p) * 0.05)
    return model


def _save_adapter(model: Any, out: Path, base: Path, **save: Any) -> Path:
    model.save_pretrained(out, **save)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_residual_base_adapters_are_refused_by_name(init: str, tiny_llama: Path, tmp_path: Path) -> None:
    model = _peft_model(tiny_llama, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=init)
    adapter = _save_adapter(model, tmp_path / "adapter", tiny_llama)
    with pytest.raises(MergeError, match=f"init_lora_weights='{init}'.*{'PiSSA' if init == 'pissa' else 'OLoRA'}"
                                         ".*path_initial_model_for_weight_conversion"):
        export_checkpoint(str(adapter), str(tmp_path / "out"))
    assert_nothing_published(tmp_path / "out")


def test_pissa_converted_by_peft_exports_the_trained_model(tiny_llama: Path, tmp_path: Path) -> None:
    """PEFT's documented way out: save with path_initial_model_for_weight_conversion
    (a plain LoRA relative to the original base). Its export equals the trained model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights="pissa"))
    initial = tmp_path / "initial"
    model.peft_config["default"].init_lora_weights = True  # PEFT's recipe: save the initial adapter as plain LoRA
    model.save_pretrained(initial)
    model.peft_config["default"].init_lora_weights = "pissa"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.05)
    trained = _logits(model)
    adapter = _save_adapter(model, tmp_path / "adapter", tiny_llama, path_initial_model_for_weight_conversion=str(initial))
    export_checkpoint(str(adapter), str(tmp_path / "out"))
    assert torch.allclose(_export_logits(tmp_path / "out"), trained, atol=1e-4)


@pytest.mark.parametrize("init", ["corda", "loftq", "lora_ga", "mystery"])
def test_other_base_changing_inits_are_refused(init: str, tiny_llama: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["init_lora_weights"] = init
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(MergeError, match=f"init_lora_weights='{init}'"):
        export_checkpoint(str(adapter), str(tmp_path / "out"))


def test_expert_lora_fitting_no_parameter_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    """Parameter-level LoRA keys (``…mlp.experts.lora_A``) on a base without such
    experts: refused by name, not merged somewhere."""
    import torch
    from safetensors.torch import load_file, save_file

    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    tensors["base_model.model.model.layers.0.mlp.experts.lora_A.weight"] = torch.zeros(12, 64)
    tensors["base_model.model.model.layers.0.mlp.experts.lora_B.weight"] = torch.zeros(64, 12)
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(MergeError, match="cannot tell which parameter of model.layers.0.mlp.experts"):
        export_checkpoint(str(adapter), str(tmp_path / "out"))
    assert_nothing_published(tmp_path / "out")


def test_tied_embedding_lora_exports_the_trained_model_untied(tiny_qwen_sharded: Path, tmp_path: Path,
                                                              validate_ok: Any) -> None:
    """PEFT's own merge is wrong here (the merged embedding would drive the output
    layer); the oracle is the trained model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = _peft_model(tiny_qwen_sharded, r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"])
    trained = _logits(model)
    adapter = _save_adapter(model, tmp_path / "adapter", tiny_qwen_sharded)
    export_checkpoint(str(adapter), str(tmp_path / "out"))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    mine = read_export(tmp_path / "out")
    assert not torch.equal(mine["lm_head.weight"], mine["model.embed_tokens.weight"])
    assert torch.allclose(_export_logits(tmp_path / "out"), trained, atol=1e-4)
    peft_merge = _logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_qwen_sharded),
                                                   adapter).merge_and_unload())
    assert not torch.allclose(peft_merge, trained, atol=1e-2)  # why PEFT is not the oracle
    validate_ok(tmp_path / "out")


def test_torchtune_epochs_are_ordered_by_number(tiny_llama: Path, tmp_path: Path) -> None:
    """torchtune writes epoch_0/ … epoch_N/ (merged full weights each): latest is the
    highest number, not the last name (epoch_9 < epoch_10)."""
    out = tmp_path / "torchtune"
    for epoch in (0, 1, 9, 10):
        shutil.copytree(tiny_llama, out / f"epoch_{epoch}")
    result = export_checkpoint(str(out), str(tmp_path / "export"), checkpoint="latest")
    assert "epoch_10" in result.explanation


def test_peft_wrapped_full_checkpoint_is_refused(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    """A PeftModel's state dict saved as the model (what FSDP FULL_STATE_DICT of a
    PeftModel gives): export refuses it, validate calls it not deployable."""
    from safetensors.torch import save_file

    model = _peft_model(tiny_llama, r=4, lora_alpha=8, target_modules=["q_proj"])
    folder = tmp_path / "wrapped"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").unlink()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="PEFT wrapper names.*base_model.model"):
        export_checkpoint(str(folder), str(tmp_path / "out"))
    assert_nothing_published(tmp_path / "out")
    code, doc, _err = cli("validate", folder, "--json")
    assert code == 1 and doc is not None
    assert [f["code"] for f in doc["findings"] if f["severity"] == "error"] == ["peft-wrapper-names"]


def _trainer_checkpoint(base: Path, out: Path, step: int) -> Path:
    """The files the HF Trainer leaves in checkpoint-N/ besides the model."""
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json", "tokenizer.json"):
        if (base / name).exists():
            shutil.copy(base / name, ckpt / name)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


def test_deepspeed_zero3_full_checkpoint_names_the_consolidation(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    out = tmp_path / "run"
    ckpt = _trainer_checkpoint(tiny_llama, out, 4)
    (ckpt / "global_step4").mkdir()
    (ckpt / "global_step4" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"\0" * 16)
    (ckpt / "global_step4" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"\0" * 16)
    (ckpt / "latest").write_text("global_step4")
    (ckpt / "zero_to_fp32.py").write_text("# DeepSpeed's consolidation script\n")
    code, _doc, err = cli("export", out, tmp_path / "dest", "--checkpoint", "latest")
    assert code == 1
    assert "DeepSpeed ZeRO checkpoint" in err and "zero_to_fp32.py" in err and "Traceback" not in err
    assert_nothing_published(tmp_path / "dest")


def test_fsdp_sharded_state_dict_names_the_consolidation(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    """A real torch.distributed.checkpoint folder, as accelerate writes it for
    fsdp_state_dict_type SHARDED_STATE_DICT."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    out = tmp_path / "run"
    ckpt = _trainer_checkpoint(tiny_llama, out, 6)
    dcp.save({"model": load_file(str(tiny_llama / "model.safetensors"))},
             checkpoint_id=str(ckpt / "pytorch_model_fsdp_0"))
    assert any(p.suffix == ".distcp" for p in (ckpt / "pytorch_model_fsdp_0").iterdir())
    code, _doc, err = cli("export", out, tmp_path / "dest")
    assert code == 1
    assert "FSDP sharded state dict" in err and "accelerate merge-weights" in err and "Traceback" not in err


def test_hub_id_base_without_base_model_fails_fast(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "meta-llama/Llama-3.2-1B"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    code, _doc, err = cli("export", adapter, tmp_path / "dest")
    assert code == 1
    assert "meta-llama/Llama-3.2-1B" in err and "--base-model" in err and "Traceback" not in err


def _train_data(tokenizer_dir: Path) -> Any:
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = ["hello world, the tiny model learns", "a second line of text to fit", "and a third one"] * 4
    enc = tok(texts, truncation=True, max_length=16, padding="max_length")
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                              "labels": enc["input_ids"]})


def test_trainer_peft_output_dir_exports_the_trained_model(tiny_llama: Path, tmp_path: Path, validate_ok: Any) -> None:
    """transformers Trainer + PEFT, really run (4 CPU steps): the whole output_dir, with
    checkpoint-N/ holding optimizer, scheduler, rng state, trainer_state.json and
    training_args.bin. The export of the latest checkpoint loads with transformers and
    gives the trained model's logits; no training state is copied."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    out = tmp_path / "output_dir"
    args = TrainingArguments(output_dir=str(out), max_steps=4, save_steps=2, per_device_train_batch_size=4,
                             learning_rate=5e-2, report_to=[], use_cpu=True, logging_steps=100, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=_train_data(tiny_llama)).train()
    last = out / "checkpoint-4"
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin"} <= {p.name for p in last.iterdir()}
    trained = _logits(model.eval())
    result = export_checkpoint(str(out), str(tmp_path / "export"), base_model=str(tiny_llama), checkpoint="latest")
    assert "checkpoint-4" in result.explanation
    assert torch.allclose(_export_logits(tmp_path / "export"), trained, atol=1e-4)
    copied = {p.name for p in (tmp_path / "export").iterdir()}
    assert not copied & {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin"}
    validate_ok(tmp_path / "export")


def test_trl_sft_lora_with_added_tokens_exports_the_trained_model(tiny_llama: Path, tmp_path: Path,
                                                                  validate_ok: Any) -> None:
    """TRL SFTTrainer with LoRA, a special token added (vocabulary resized) and the
    embedding and head trained whole (modules_to_save), really run on CPU. The export
    holds the resized vocabulary, its tokenizer knows the new token, and its logits are
    the trained model's."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.add_special_tokens({"additional_special_tokens": ["<tool_call>"]})
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.resize_token_embeddings(len(tok))
    data = Dataset.from_dict({"text": ["hello world <tool_call> the tiny model", "a second <tool_call> line"] * 4})
    out = tmp_path / "sft"
    args = SFTConfig(output_dir=str(out), max_steps=3, save_steps=3, per_device_train_batch_size=4,
                     learning_rate=5e-2, report_to=[], use_cpu=True, logging_steps=100, disable_tqdm=True,
                     max_length=32, bf16=False)  # float32 throughout: the comparison is exact
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                modules_to_save=["embed_tokens", "lm_head"]))
    trainer.train()
    trainer.save_model(str(out))
    trained = _logits(trainer.model.eval())
    export_checkpoint(str(out), str(tmp_path / "export"), base_model=str(tiny_llama))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["vocab_size"] == len(tok)
    assert AutoTokenizer.from_pretrained(tmp_path / "export").convert_tokens_to_ids("<tool_call>") == len(tok) - 1
    assert torch.allclose(_export_logits(tmp_path / "export"), trained, atol=1e-4)
    validate_ok(tmp_path / "export")


def test_trl_sft_trainable_token_indices_exports_the_trained_model(tiny_llama: Path, tmp_path: Path,
                                                                   validate_ok: Any) -> None:
    """TRL SFTTrainer with LoRA and PEFT trainable tokens (only the rows of chosen token
    ids trained), really run: the export's logits are the trained model's. (With tied
    embeddings PEFT 0.21 + transformers 5.24 cannot train this at all: the tied head's
    TrainableTokensWrapper has no ``bias``.)"""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    base, tied = tiny_llama, False
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    data = Dataset.from_dict({"text": ["hello world, the tiny model", "a second line of text"] * 4})
    ids = sorted(set(tok("hello world second")["input_ids"]))[:3]
    out = tmp_path / "sft"
    args = SFTConfig(output_dir=str(out), max_steps=3, save_steps=3, per_device_train_batch_size=4,
                     learning_rate=5e-2, report_to=[], use_cpu=True, logging_steps=100, disable_tqdm=True,
                     max_length=32, bf16=False)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=args, train_dataset=data,
                         processing_class=tok,
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                trainable_token_indices=ids))
    trainer.train()
    trainer.save_model(str(out))
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        assert any(k.endswith("token_adapter.trainable_tokens_delta") for k in f.keys())
    trained = _logits(trainer.model.eval())
    export_checkpoint(str(out), str(tmp_path / "export"), base_model=str(base))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config.get("tie_word_embeddings", True) is tied
    assert torch.allclose(_export_logits(tmp_path / "export"), trained, atol=1e-4)
    validate_ok(tmp_path / "export")


def test_trl_sft_full_fine_tune_exports_the_trained_model(tiny_llama: Path, tmp_path: Path, validate_ok: Any) -> None:
    """TRL SFTTrainer full fine-tune, really run: the output_dir's checkpoint exports as
    full weights, with the trained model's logits and no training state."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    data = Dataset.from_dict({"text": ["hello world, the tiny model", "a second line of text"] * 4})
    out = tmp_path / "sft-full"
    args = SFTConfig(output_dir=str(out), max_steps=2, save_steps=2, per_device_train_batch_size=4,
                     learning_rate=1e-2, report_to=[], use_cpu=True, logging_steps=100, disable_tqdm=True,
                     max_length=32, bf16=False)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_llama), args=args, train_dataset=data,
                         processing_class=tok)
    trainer.train()
    trained = _logits(trainer.model.eval())
    result = export_checkpoint(str(out), str(tmp_path / "export"), checkpoint="latest")
    assert result.source_kind == "hf-trainer" and "checkpoint-2" in result.explanation
    assert torch.allclose(_export_logits(tmp_path / "export"), trained, atol=1e-5)
    assert not {p.name for p in (tmp_path / "export").iterdir()} & {"optimizer.pt", "scheduler.pt", "training_args.bin"}
    validate_ok(tmp_path / "export")


def test_name_mapping_builds_only_transformers_model_classes() -> None:
    """The base config's ``architectures`` picks the class built on the meta device for
    name mapping: a name that is not a transformers model class builds nothing."""
    from tune2serve.components.export.plan.names import DiskNames

    for arch in ("pipeline", "AutoModel", "os", "EvilForCausalLM"):
        names = DiskNames({"model_type": "llama", "architectures": [arch], "hidden_size": 8})
        assert names.to_disk("model.layers.0.self_attn.q_proj.weight") is None
        assert names.parameters() is None


@pytest.mark.parametrize("tied", [True, False], ids=["qwen2-tied", "llama-untied"])
def test_trl_sft_lora_tied_and_untied_exports_the_trained_model(tied: bool, tiny_qwen_sharded: Path, tiny_llama: Path,
                                                               tmp_path: Path, validate_ok: Any) -> None:
    """TRL SFTTrainer with LoRA on chat data, really run (3 CPU steps), on a model with
    tied embeddings and on one without: the export keeps what the model really is
    (tied: no lm_head written; untied: its own lm_head), vocab_size = embedding rows,
    the exported tokenizer applies the chat template, logits = the trained model's,
    and nothing of checkpoint-N/'s training state is copied."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    base = tiny_qwen_sharded if tied else tiny_llama
    torch.manual_seed(0)
    chat = [{"role": "user", "content": "the capital of france"}, {"role": "assistant", "content": "is paris"}]
    out = tmp_path / "sft"
    args = SFTConfig(output_dir=str(out), max_steps=3, save_steps=3, per_device_train_batch_size=4,
                     learning_rate=5e-2, report_to=[], use_cpu=True, logging_steps=100, disable_tqdm=True,
                     max_length=32, bf16=False)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=args,
                         train_dataset=Dataset.from_dict({"messages": [chat] * 8}),
                         processing_class=AutoTokenizer.from_pretrained(base),
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    trainer.train()
    trainer.save_model(str(out))
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json"} <= {p.name for p in (out / "checkpoint-3").iterdir()}
    trained = _logits(trainer.model.eval())
    result = export_checkpoint(str(out), str(tmp_path / "export"), base_model=str(base))
    assert result.source_kind == "hf-trainer"
    export = tmp_path / "export"
    config = json.loads((export / "config.json").read_text())
    mine = read_export(export)
    assert config["tie_word_embeddings"] is tied and ("lm_head.weight" in mine) is not tied
    assert config["vocab_size"] == mine["model.embed_tokens.weight"].shape[0]
    model = AutoModelForCausalLM.from_pretrained(export)
    assert (model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()) is tied
    assert torch.allclose(_logits(model), trained, atol=1e-4)
    prompt = AutoTokenizer.from_pretrained(export).apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "the capital of france" in prompt
    written = {p.relative_to(export).as_posix() for p in export.rglob("*")}
    assert not written & {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin",
                          "adapter_model.safetensors", "adapter_config.json"}
    assert not any(n.startswith("checkpoint-") for n in written)
    validate_ok(export)
