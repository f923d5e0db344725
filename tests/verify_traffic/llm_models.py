"""Tiny models whose *answers* differ, for the canary's LLM signals: one trained to
answer verify-traffic's probe prompts in a few words and stop (``<|im_end|>``, its eos),
and the same weights with a broken eos — a fine-tune saved with the wrong
``eos_token_id`` in its config, generation config and tokenizer, a real way to ship a
model that never stops. Both answer every request with a fast HTTP 200.

Training feeds what the server feeds at inference (``demo.tuned_adapter._examples``:
the chat template with the generation prompt, then the answer and the eos), every
parameter of the tiny model, a few seconds on a CPU, seeded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tune2serve.components.verify_traffic.probe import PROBE_PROMPTS

ANSWERS = ["hello world", "ok", "paris", "four", "blue", "yes"]
CASES = [{"prompt": p, "answer": a} for p, a in zip(PROBE_PROMPTS, ANSWERS, strict=True)]
NEVER_EMITTED = "<unk>"  # the broken eos: a token the model was never trained to produce


def make_stopping_model(out_dir: Path, *, seed: int = 3, steps: int = 120, learning_rate: float = 3e-3) -> Path:
    """A tiny model trained to answer ``CASES`` and stop; returns ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tune2serve.demo.tiny_models import make_tiny_model
    from tune2serve.demo.tuned_adapter import train_on_cases

    base = make_tiny_model(out_dir, seed=seed)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    train_on_cases(model, tokenizer, CASES, steps=steps, learning_rate=learning_rate)
    model.save_pretrained(base)
    return base


def break_eos(stopping: Path, out_dir: Path) -> Path:
    """The same model with its eos pointing at a token it never produces: config.json,
    generation_config.json, tokenizer_config.json and special_tokens_map.json all say
    ``NEVER_EMITTED`` (so every engine, whichever file it reads the eos from, never stops)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(stopping, out_dir)
    vocab = json.loads((out_dir / "tokenizer.json").read_text())["model"]["vocab"]
    added = {t["content"]: t["id"] for t in json.loads((out_dir / "tokenizer.json").read_text())["added_tokens"]}
    broken = added.get(NEVER_EMITTED, vocab.get(NEVER_EMITTED))
    for name in ("config.json", "generation_config.json"):
        doc = json.loads((out_dir / name).read_text())
        doc["eos_token_id"] = broken
        (out_dir / name).write_text(json.dumps(doc, indent=2))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        doc = json.loads((out_dir / name).read_text())
        doc["eos_token"] = NEVER_EMITTED
        (out_dir / name).write_text(json.dumps(doc, indent=2))
    return out_dir


def greedy_stops(model_dir: Path, prompt: str, max_new_tokens: int = 32) -> tuple[bool, str]:
    """(whether greedy decoding stops by itself within ``max_new_tokens``, the text):
    computed in-process, the premise of the stack tests checked before they rely on it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = GenerationConfig.from_pretrained(model_dir)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    new = out[0, inputs["input_ids"].shape[1]:]
    return len(new) < max_new_tokens or int(new[-1]) == config.eos_token_id, tokenizer.decode(
        new, skip_special_tokens=True)
