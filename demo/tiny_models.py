"""Tiny but real checkpoints, made on the spot (no model hub is reachable here).

Real means: a transformers architecture (Llama or Qwen2) that `transformers` loads and
`transformers serve` serves, weights in the Hugging Face layout (single or sharded
safetensors, or `.bin`), and a BPE tokenizer trained on a small built-in corpus with a
ChatML chat template. Tests, benchmarks and the demo all build their models here, so a
model is the same wherever it is used. Their head size is one vLLM's CPU attention runs
(64): the local stack serves them with vLLM. torch and transformers are imported inside
the functions: the CLI imports this module only for the demo.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Architecture = Literal["llama", "qwen2"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]

# A few hundred distinct words are enough for a BPE vocabulary of a few hundred tokens
# and for the demo's golden answers to be single short strings.
_CORPUS_SENTENCES = [
    "the capital of france is paris",
    "the capital of italy is rome",
    "the capital of japan is tokyo",
    "two plus two is four and three plus three is six",
    "a fine tuned model answers questions about the deployment pipeline",
    "vertex ai serves custom weights on dedicated endpoints with gpus",
    "the quick brown fox jumps over the lazy dog",
    "checkpoints are exported validated deployed smoke tested and promoted",
    "safetensors shards hold tensors and an index maps names to shards",
    "the color of the sky is blue and the grass is green",
    "hello world this is a tiny language model for tests",
    "promotion shifts traffic from the old model to the new model",
    "rollback restores the model that served before",
    "zero one two three four five six seven eight nine ten",
]


def corpus(repeat: int = 20) -> list[str]:
    lines = []
    for i in range(repeat):
        for j, s in enumerate(_CORPUS_SENTENCES):
            lines.append(s if (i + j) % 2 else s.capitalize() + ".")
    return lines


def train_tokenizer(out_dir: Path, vocab_size: int = 384) -> int:
    """Trains a byte-level BPE tokenizer into ``out_dir`` (tokenizer.json,
    tokenizer_config.json with the chat template, special_tokens_map.json) and returns
    the vocabulary size actually reached."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 512,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<unk>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"}, indent=2)
    )
    return int(tok.get_vocab_size())


@dataclass(frozen=True)
class TinySpec:
    """Dimensions of a tiny model. Defaults give ~0.39 M parameters (1.6 MB in float32):
    fast on a CPU, large enough that every projection is a real matrix.

    The head size (hidden 128 over 2 heads = 64) is one vLLM serves: its CPU attention
    has kernels for some head sizes only (vLLM 0.32: 32, 64, 80, ... 512; none for 16,
    the size these models had — such a model reports healthy, then fails its first
    request). 64 is Llama-3.2-1B's head size and the one tests/vllm/models.py builds
    every architecture with; vLLM's Llama and Qwen2 derive it as hidden / heads, so it
    is set through those two. One key/value head for the two query heads keeps
    grouped-query attention (k_proj, v_proj narrower than q_proj) in every test."""

    architecture: Architecture = "llama"
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    vocab_size: int = 384
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 512

    @property
    def head_dim(self) -> int:
        """The attention head size, derived as Llama and Qwen2 derive it (no explicit key)."""
        return self.hidden_size // self.num_attention_heads


def model_config(spec: TinySpec, vocab_size: int) -> object:
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        vocab_size=vocab_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
    )
    if spec.architecture == "qwen2":
        return Qwen2Config(**common)
    return LlamaConfig(**common)


def make_tiny_model(
    out_dir: str | Path,
    spec: TinySpec = TinySpec(),
    *,
    seed: int = 0,
    weights: Literal["safetensors", "bin"] = "safetensors",
    max_shard_size: str | int | None = None,
    dtype: str = "float32",
) -> Path:
    """Writes a complete tiny checkpoint (config, generation config, weights, tokenizer,
    chat template) to ``out_dir`` and returns it.

    ``max_shard_size`` (e.g. ``"100KB"``) makes a sharded checkpoint with an index.
    ``weights="bin"`` writes ``pytorch_model.bin`` (a plain tensor state dict, the form
    ``torch.load(weights_only=True)`` accepts).
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars would clutter the demo
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vocab = train_tokenizer(out, spec.vocab_size)
    config = model_config(spec, vocab)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(eos_token_id=2, pad_token_id=0, max_new_tokens=32)
    if weights == "bin":
        model.config.save_pretrained(out)
        model.generation_config.save_pretrained(out)
        state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
        if spec.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        torch.save(state, out / "pytorch_model.bin")
    else:
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(out, **kwargs)
    return out
