"""Writes the JSON files real tools write, into ``tests/corpus/<producer>/``.

Run it once per producer environment and check the output in; ``test_corpus.py`` runs
every reader and every step over it, so a hardening that refuses what a real tool writes
fails there before it lands.

    .venv/bin/python -m tests.corpus.generate            # transformers 5 (the lock), PEFT, TRL
    /tmp/tf4/bin/python -m tests.corpus.generate         # a throwaway venv with transformers 4.x

Only files (config, generation config, tokenizer, adapter and trainer state): no weights.
The configs are the tiny configs of ``tests/validate/meta_layouts`` (one per supported
class, vocabulary widened to fit the tokenizer), saved by each class's ``save_pretrained``;
the tokenizer is a byte-level BPE trained here, saved by each family's tokenizer class
with and without a known maximum (without one transformers writes ``int(1e30)``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests.validate.meta_layouts, in a venv without tune2serve

from tests.validate.meta_layouts import TINY, tiny_config  # noqa: E402

VOCAB = 512
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# The tokenizer class each family's checkpoints name (tokenizer_config.json "tokenizer_class").
TOKENIZER_CLASSES = {"llama": "LlamaTokenizerFast", "qwen2": "Qwen2TokenizerFast", "gemma": "GemmaTokenizerFast",
                     "generic": "PreTrainedTokenizerFast"}
KEEP = ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
        "tokenizer.json", "chat_template.jinja", "adapter_config.json", "trainer_state.json")


def _tokenizer_object() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["the capital of france is paris", "two plus two is four"] * 50, trainer=trainer)
    return tok


def _keep(src: Path, dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    kept = []
    for name in KEEP:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
            kept.append(name)
    return kept


def tokenizers_(out: Path) -> dict[str, Any]:
    import transformers

    made: dict[str, Any] = {}
    for family, class_name in TOKENIZER_CLASSES.items():
        cls = getattr(transformers, class_name, None) or getattr(transformers, class_name.removesuffix("Fast"), None)
        if cls is None:
            made[family] = f"no class {class_name}"
            continue
        for variant, extra in (("no_max", {}), ("with_max", {"model_max_length": 4096})):
            with tempfile.TemporaryDirectory() as tmp:
                tok = cls(tokenizer_object=_tokenizer_object(), eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          bos_token="<|endoftext|>", unk_token=None, chat_template=CHAT_TEMPLATE, **extra)
                tok.save_pretrained(tmp)
                made[f"{family}/{variant}"] = {"class": type(tok).__name__,
                                               "files": _keep(Path(tmp), out / "tokenizer" / family / variant)}
    return made


def configs(out: Path) -> dict[str, Any]:
    from transformers import GenerationConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    made: dict[str, Any] = {}
    for key in TINY:
        cfg = tiny_config(key)
        model_type = cfg.pop("model_type")
        if model_type not in CONFIG_MAPPING:
            made[key] = f"model_type {model_type} unknown to this transformers"
            continue
        config = CONFIG_MAPPING[model_type](**{**cfg, "vocab_size": VOCAB})
        config.architectures = [TINY[key][0]]
        # What a model's save_pretrained adds: its dtype, as each version names it.
        setattr(config, "dtype" if hasattr(config, "dtype") and not hasattr(config, "torch_dtype") else "torch_dtype",
                "bfloat16")
        with tempfile.TemporaryDirectory() as tmp:
            config.save_pretrained(tmp)
            GenerationConfig.from_model_config(config).save_pretrained(tmp)
            made[key] = {"files": _keep(Path(tmp), out / "families" / key)}
    return made


def peft_trl(out: Path) -> dict[str, Any]:
    """PEFT's adapter_config.json (LoRA, rsLoRA and DoRA variants) and TRL's SFTTrainer
    output of a few steps on a tiny Llama (adapter_config.json, trainer_state.json,
    tokenizer files as the trainer saves them)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast
    from trl import SFTConfig, SFTTrainer

    made: dict[str, Any] = {}
    torch.manual_seed(0)
    base_cfg = LlamaConfig(**{k: v for k, v in tiny_config("llama").items() if k != "model_type"} | {"vocab_size": VOCAB})
    for name, lora in (("lora", {}), ("rslora", {"use_rslora": True}), ("dora", {"use_dora": True}),
                       ("all_linear", {"target_modules": "all-linear"})):
        model = get_peft_model(AutoModelForCausalLM.from_config(base_cfg),
                               LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM",
                                          **({"target_modules": ["q_proj", "v_proj"]} | lora)))
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            made[f"peft/{name}"] = {"files": _keep(Path(tmp), out / "peft" / name)}
    tok = PreTrainedTokenizerFast(tokenizer_object=_tokenizer_object(), eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)
    data = Dataset.from_list([{"messages": [{"role": "user", "content": "capital of france"},
                                            {"role": "assistant", "content": "paris"}]}] * 8)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_config(base_cfg), processing_class=tok, train_dataset=data,
                             peft_config=LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"),
                             args=SFTConfig(output_dir=tmp, max_steps=2, per_device_train_batch_size=4, save_steps=2,
                                            report_to=[], logging_steps=1, use_cpu=True, save_only_model=True))
        trainer.train()
        ckpt = Path(tmp) / "checkpoint-2"
        made["trl/sft_lora_checkpoint"] = {"files": _keep(ckpt, out / "trl" / "sft_lora_checkpoint")}
    return made


def torchtune_(out: Path) -> dict[str, Any] | None:
    """torchtune's LoRA recipe's ``epoch_N/adapter_config.json``: the recipe's dict (rank,
    alpha, target modules of the llama3 LoRA configs, peft_type) through torchtune's own
    ``tune_to_peft_adapter_config``, dumped as its checkpointer dumps it (``json.dump``, no
    indent). The converter module is loaded by path: torchtune's package ``__init__``
    needs a torchao that matches its torch, which the converter does not use."""
    import importlib.util

    spec = importlib.util.find_spec("torchtune")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "convert_weights.py"
    loader = importlib.util.spec_from_file_location("torchtune_convert_weights", path)
    assert loader and loader.loader
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    recipe = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "output_proj", "w1", "w2", "w3"],
              "peft_type": "LORA"}
    config = module.tune_to_peft_adapter_config(recipe, base_model_name_or_path="meta-llama/Llama-3.2-1B-Instruct")
    dest = out / "torchtune" / "lora_epoch_0"
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "adapter_config.json", "w") as f:
        json.dump(config, f)
    from importlib.metadata import version

    return {"torchtune": version("torchtune"), "files": ["adapter_config.json"]}


def main() -> None:
    import transformers

    producer = f"transformers{transformers.__version__.split('.')[0]}"
    out = HERE / producer
    shutil.rmtree(out, ignore_errors=True)
    made: dict[str, Any] = {"transformers": transformers.__version__}
    made["tokenizers"] = tokenizers_(out)
    made["configs"] = configs(out)
    try:
        import peft
        import trl
    except ImportError:
        pass
    else:
        made["peft"], made["trl"] = peft.__version__, trl.__version__
        made.update(peft_trl(out))
    made["torchtune"] = torchtune_(out)
    (out / "PRODUCED_BY.json").write_text(json.dumps(made, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
