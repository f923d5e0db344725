"""PEFT options whose tensors are not LoRA matrices: trained biases (``bias="lora_only"``
/ ``"all"``, ``lora_bias=True``) and adapters pickled as ``adapter_model.bin``.

Biases are exported on bases whose projections have them (Qwen2's q/k/v, Llama with
``attention_bias`` and ``mlp_bias``), given random non-zero values first so that an
export that dropped, replaced or double-added a bias could not pass. The oracle is
PEFT: the merged tensors equal ``merge_and_unload()`` and the logits the unmerged
PEFT model's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import assert_matches, assert_nothing_published, hostile_pickle, peft_merged, read_export
from tests.export.test_producers import _export_logits, _logits, _save_adapter
from tune2serve.components.errors import MergeError
from tune2serve.components.export.export import export_checkpoint

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def _with_random_biases(src: Path, out: Path, **config: Any) -> Path:
    """``src``'s architecture (with ``config`` changes) re-initialised, every bias drawn
    from N(0, 0.1): transformers initialises biases to zero, where adding and replacing
    a bias give the same result."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(src)
    for key, value in config.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="module")
def biased(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, tiny_qwen_sharded: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("biased")
    return {"qwen2-tied": _with_random_biases(tiny_qwen_sharded, root / "qwen2"),
            "llama-biases": _with_random_biases(tiny_llama, root / "llama", attention_bias=True, mlp_bias=True)}


TARGETS = {"qwen2-tied": ["q_proj", "v_proj"], "llama-biases": ["q_proj", "o_proj", "down_proj"]}
BIAS_OPTIONS: dict[str, dict[str, Any]] = {
    "lora_only": dict(bias="lora_only"), "all": dict(bias="all"), "lora_bias": dict(lora_bias=True),
    "lora_bias+all": dict(lora_bias=True, bias="all"),
}


def _trained(base: Path, **lora: Any) -> Any:
    """A PEFT model with every trainable parameter moved off its initial value, as
    training would move it (lora_B, lora_B's bias, the base biases PEFT unfroze)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, lora_alpha=8, **lora))
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("option", sorted(BIAS_OPTIONS))
@pytest.mark.parametrize("arch", sorted(TARGETS))
def test_trained_biases_merge_as_peft(arch: str, option: str, biased: dict[str, Path], tmp_path: Path,
                                      validate_ok: Any) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    base = biased[arch]
    model = _trained(base, target_modules=TARGETS[arch], **BIAS_OPTIONS[option])
    trained = _logits(model)
    adapter = _save_adapter(model, tmp_path / "adapter", base)
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        saved_biases = [k for k in f.keys() if k.endswith("bias")]
    assert saved_biases, "PEFT saved no bias: the case proves nothing"
    export_checkpoint(str(adapter), str(tmp_path / "out"))
    mine = read_export(tmp_path / "out")
    oracle = peft_merged(base, adapter)
    assert_matches(mine, oracle, tied=arch == "qwen2-tied")
    base_tensors = load_file(base / "model.safetensors")  # the biases really moved: ignoring them fails
    assert any(not torch.equal(mine[n], base_tensors[n]) for n in mine if n.endswith(".bias"))
    assert torch.allclose(_export_logits(tmp_path / "out"), trained, atol=1e-5)
    validate_ok(tmp_path / "out")


def test_lora_bias_on_a_layer_without_bias_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    """PEFT trains it (the bias lives on lora_B) but cannot merge it: the base layer has
    no bias to add it to. Refused by name, nothing written."""
    model = _trained(tiny_llama, target_modules=["q_proj"], lora_bias=True)
    adapter = _save_adapter(model, tmp_path / "adapter", tiny_llama)
    with pytest.raises(MergeError, match=r"lora_B of model.layers.0.self_attn.q_proj \(lora_bias=True\), but the "
                                         r"base layer has no bias"):
        export_checkpoint(str(adapter), str(tmp_path / "out"))
    assert_nothing_published(tmp_path / "out")


def test_bin_adapter_merges_as_peft(biased: dict[str, Path], tmp_path: Path, validate_ok: Any) -> None:
    """``save_pretrained(safe_serialization=False)``: ``adapter_model.bin``, read through
    the pickle scan and ``torch.load(weights_only=True)``."""
    import torch

    base = biased["llama-biases"]
    model = _trained(base, target_modules=["q_proj", "v_proj", "down_proj"], bias="lora_only",
                     modules_to_save=["lm_head"])
    adapter = _save_adapter(model, tmp_path / "adapter", base, safe_serialization=False)
    assert {p.name for p in adapter.iterdir()} >= {"adapter_model.bin"}
    assert not (adapter / "adapter_model.safetensors").exists()
    export_checkpoint(str(adapter), str(tmp_path / "out"))
    assert_matches(read_export(tmp_path / "out"), peft_merged(base, adapter), tied=False)
    assert torch.allclose(_export_logits(tmp_path / "out"), _logits(model), atol=1e-5)
    validate_ok(tmp_path / "out")


def test_hostile_bin_adapter_is_refused_unrun(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    """An ``adapter_model.bin`` whose pickle calls os.system on load: exit 1, the file
    named, the payload never run, nothing at DEST."""
    import torch

    model = _trained(tiny_llama, target_modules=["q_proj"])
    adapter = _save_adapter(model, tmp_path / "adapter", tiny_llama, safe_serialization=False)
    marker = tmp_path / "MARKER"
    hostile_pickle(adapter / "adapter_model.bin", marker, torch.load(adapter / "adapter_model.bin", weights_only=True))
    code, _doc, err = cli("export", adapter, tmp_path / "dest")
    assert code == 1
    assert "adapter_model.bin" in err and "system" in err and "Traceback" not in err
    assert not marker.exists()
    assert_nothing_published(tmp_path / "dest")
