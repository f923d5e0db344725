"""A LoRA adapter trained a few seconds on CPU so that the tuned tiny model answers the
golden prompts that the base model does not: the demo's proof that the fine-tune, not
the base, is what got deployed.

Training feeds exactly what ``transformers serve`` feeds at inference: the prompt is
``tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)``
(the server's own call), followed by the answer's tokens and ``<|im_end|>`` (the eos, so
greedy decoding stops there). Loss is on the answer only. Seeded and deterministic.

The served model must give the same greedy answer in vLLM's bf16 as in float32, so what
matters is each answer token's lead over the runner-up. The LoRA cannot touch the output
layer, which bounds that lead: on the default tiny model (head size 64) it levels off
at 1.3-1.7 logits by step 60-80 (about 0.5 CPU s a step on 2 cores) and more steps add
nothing; bf16 moves these logits by a few hundredths.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

# Each golden case: the prompt, the answer the adapter is trained to give, and the
# regular expression the smoke test checks (a word the base model does not produce).
GOLDEN: list[dict[str, str]] = [
    {"name": "capital-of-france", "prompt": "what is the capital of france",
     "answer": "the capital of france is paris", "expect": r"\bparis\b"},
    {"name": "color-of-the-sky", "prompt": "what is the color of the sky",
     "answer": "the color of the sky is blue", "expect": r"\bblue\b"},
    {"name": "what-rollback-does", "prompt": "what does rollback do",
     "answer": "rollback restores the model that served before", "expect": r"\brestores\b"},
]

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def golden_jsonl(cases: list[dict[str, str]] = GOLDEN) -> str:
    """The golden cases as the smoke test reads them (JSON Lines, no answers)."""
    return "".join(json.dumps({"name": c["name"], "prompt": c["prompt"], "expect": c["expect"]}) + "\n"
                   for c in cases)


def write_golden(path: str | Path, cases: list[dict[str, str]] = GOLDEN) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(golden_jsonl(cases), encoding="utf-8")
    return out


def _examples(tokenizer: Any, cases: list[dict[str, str]]) -> list[tuple[list[int], list[int]]]:
    out = []
    for c in cases:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": c["prompt"]}],
                                               add_generation_prompt=True, tokenize=True, return_dict=True)
        prompt_ids = list(prompt["input_ids"])
        answer_ids = tokenizer(c["answer"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((prompt_ids, list(answer_ids)))
    return out


def train_on_cases(model: Any, tokenizer: Any, cases: list[dict[str, str]], *, steps: int, learning_rate: float) -> None:
    """Trains ``model``'s trainable parameters (a LoRA's, or all of a plain model's) to
    answer ``cases`` as the server prompts them: one full batch, loss on the answers only,
    AdamW for ``steps`` steps; leaves it in eval mode."""
    import torch

    examples = _examples(tokenizer, cases)
    width = max(len(p) + len(a) for p, a in examples)
    pad = tokenizer.pad_token_id or 0
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (p, a) in enumerate(examples):
        seq = p + a
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p): len(seq)] = torch.tensor(a)
        mask[i, : len(seq)] = 1
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def make_tuned_adapter(base_dir: str | Path, out_dir: str | Path, *, cases: list[dict[str, str]] = GOLDEN,
                       steps: int = 80, rank: int = 8, learning_rate: float = 1e-2, seed: int = 0) -> Path:
    """Trains a PEFT LoRA adapter on ``base_dir`` (a tiny model from tiny_models.py) and
    writes it, with the tokenizer, to ``out_dir``; returns ``out_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, out = Path(base_dir), Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS,
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT calls a transformers API deprecated for v6
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(model, lora)
    train_on_cases(model, tokenizer, cases, steps=steps, learning_rate=learning_rate)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    for name in _TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, out / name)
    return out


def greedy_answer(model_dir: str | Path, prompt: str, max_new_tokens: int = 16) -> str:
    """What ``transformers serve`` answers at temperature 0 (same template call, greedy,
    stops at eos, special tokens skipped) — computed in-process for tests and the demo."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           tokenize=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    return str(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
