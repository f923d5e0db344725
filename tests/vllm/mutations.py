"""The catalogue of what goes wrong in real exports, as changes to a good folder.

Kept independent of validate: nothing here names a validate finding or reads validate's
code. Each entry says what it changes, what users see when it ships, and which of vLLM's
behaviours it shows (``expect``, as observed with the vLLM the tests run — the test
fails when vLLM behaves otherwise, so a new vLLM that changes its mind is noticed):

* ``refuses``: vLLM does not load the folder, or refuses the request (its own error text
  is recorded);
* ``misbehaves``: it loads and answers, but not as the unmutated folder does (other greedy
  tokens, or a generation that no longer stops);
* ``identical``: greedy tokens and logprobs equal to the unmutated folder's.

Where an architecture is treated otherwise than the rest, ``expect_on`` says so, with why.

``tests/vllm/test_mutations.py`` applies each to an export, asks vLLM, asks validate, and
requires them to agree: refuses/misbehaves ⇔ validate has an error finding.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Behaviour = Literal["refuses", "misbehaves", "identical"]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    expect: Behaviour
    apply: Callable[[Path], None]
    architecture: str | None = None  # None: any; else only this architecture key (tests/vllm/models.py)
    applies: Callable[[Path], bool] = lambda folder: True  # noqa: E731 - whether the good folder has what it changes
    expect_on: Mapping[str, tuple[Behaviour, str]] = field(default_factory=dict)  # architecture → (behaviour, why)

    def applies_to(self, key: str, folder: Path) -> bool:
        return (self.architecture is None or self.architecture == key) and self.applies(folder)

    def expected(self, key: str) -> Behaviour:
        return self.expect_on[key][0] if key in self.expect_on else self.expect


# ---- helpers on an exported folder (safetensors shards + index + JSON files) ----

def _json(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def _write_json(folder: Path, name: str, doc: Any) -> None:
    (folder / name).write_text(json.dumps(doc, indent=2), encoding="utf-8")


def _edit_json(folder: Path, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    doc = _json(folder, name)
    change(doc)
    _write_json(folder, name, doc)


def _shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def edit_tensors(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Loads every tensor, lets ``change`` edit the {name: tensor} dict, and writes the
    folder back as one shard with its index (what a trainer that saved these would write)."""
    from safetensors.torch import load_file, save_file

    tensors: dict[str, Any] = {}
    for shard in _shards(folder):
        tensors.update(load_file(shard))
        shard.unlink()
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.exists():
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        _write_json(folder, index.name, {"metadata": {"total_size": total},
                                         "weight_map": {n: "model.safetensors" for n in sorted(tensors)}})
    (folder / "manifest.json").unlink(missing_ok=True)  # the export's manifest no longer describes the folder


def _untied(folder: Path) -> bool:
    return "lm_head.weight" in _tensor_names(folder) and not _json(folder, "config.json").get("tie_word_embeddings")


def _text_only(folder: Path) -> bool:
    return "text_config" not in _json(folder, "config.json")


def _tensor_names(folder: Path) -> set[str]:
    from safetensors import safe_open

    names: set[str] = set()
    for shard in _shards(folder):
        with safe_open(shard, "pt") as f:
            names |= set(f.keys())
    return names


def _has_tensor(suffix: str) -> Callable[[Path], bool]:
    return lambda folder: any(n.endswith(suffix) for n in _tensor_names(folder))


def _hidden(folder: Path) -> int:
    cfg = _json(folder, "config.json")
    return int(cfg.get("text_config", cfg)["hidden_size"])


# ---- the mutations ----

def value_head(folder: Path) -> None:
    """TRL's AutoModelForCausalLMWithValueHead saved whole: v_head.summary.* beside the model."""
    import torch

    h = _hidden(folder)
    edit_tensors(folder, lambda t: t.update({"v_head.summary.weight": torch.randn(1, h, dtype=torch.bfloat16),
                                             "v_head.summary.bias": torch.zeros(1, dtype=torch.bfloat16)}))


def tied_flag_with_own_head(folder: Path) -> None:
    """An untied model (its lm_head trained apart from the embedding) whose config says tied."""
    _edit_json(folder, "config.json", lambda c: c.update(tie_word_embeddings=True))


def untied_without_head(folder: Path) -> None:
    """Untied config, lm_head.weight dropped (a tool that assumed the head is tied)."""
    edit_tensors(folder, lambda t: t.pop("lm_head.weight"))


def vocab_size_above_rows(folder: Path) -> None:
    """config.json vocab_size raised (tokens added) without resizing the embeddings."""
    _edit_json(folder, "config.json", lambda c: c.update(vocab_size=c["vocab_size"] + 128))


def tokenizer_beyond_rows(folder: Path) -> None:
    """Special tokens added to the tokenizer, embeddings and vocab_size not resized."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(f"<|extra_{i}|>", special=True) for i in range(16)])
    tok.save(str(folder / "tokenizer.json"))


def rows_padded_above_tokenizer(folder: Path) -> None:
    """Embeddings padded to a multiple of 128 beyond the tokenizer (zero rows), vocab_size
    with them: the normal shape of published models (Qwen2.5: 151,936 rows, 151,665 tokens)."""
    import torch

    def pad(t: dict[str, Any]) -> None:
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            if name in t:
                t[name] = torch.cat([t[name], torch.zeros(128, t[name].shape[1], dtype=t[name].dtype)])

    edit_tensors(folder, pad)
    _edit_json(folder, "config.json", lambda c: c.update(vocab_size=c["vocab_size"] + 128))


def leftover_quantization_config(folder: Path) -> None:
    """bf16 weights, but the config still carries the GPTQ quantization_config it was trained from."""
    _edit_json(folder, "config.json", lambda c: c.update(quantization_config={
        "quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}))


def deepseek_config_from_transformers(folder: Path) -> None:
    """A DeepSeek-V3 config as transformers' DeepseekV3Config writes it (4.x and 5.x): no
    ``topk_method``, where DeepSeek's published config says ``"noaux_tc"``; the weights
    keep the router's ``e_score_correction_bias`` that every DeepSeek-V3 has."""
    _edit_json(folder, "config.json", lambda c: c.pop("topk_method", None))


def deepseek_routing_unsaid(folder: Path) -> None:
    """A DeepSeek-V3 config without ``scoring_func`` (transformers' DeepseekV3Config has no
    such key and scores experts with a sigmoid whatever the config says; DeepSeek's
    published config says ``"sigmoid"``)."""
    _edit_json(folder, "config.json", lambda c: c.pop("scoring_func", None))


def rope_type_unknown(folder: Path) -> None:
    """A rope scaling type no transformers release defines."""
    _edit_json(folder, "config.json", lambda c: c.update(rope_parameters={
        "rope_type": "ntk-by-parts-v2", "factor": 4.0, "rope_theta": 10000.0}))


def rope_llama3_incomplete(folder: Path) -> None:
    """Llama-3.1's rope scaling without the frequency factors it is defined by."""
    _edit_json(folder, "config.json", lambda c: c.update(rope_parameters={
        "rope_type": "llama3", "factor": 8.0, "rope_theta": 10000.0}))


def architecture_unknown(folder: Path) -> None:
    """A known model_type, but an architectures class of the training code's own."""
    _edit_json(folder, "config.json", lambda c: c.update(architectures=["LlamaForCausalLMWithValueHead"]))


def no_chat_template(folder: Path) -> None:
    """The tokenizer saved without its chat template."""
    _edit_json(folder, "tokenizer_config.json", lambda c: c.pop("chat_template", None))
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)


def bin_beside_safetensors(folder: Path) -> None:
    """A stale pytorch_model.bin (other weights: zeros) left beside the safetensors shards."""
    import torch
    from safetensors.torch import load_file

    state = {}
    for shard in _shards(folder):
        state.update({k: torch.zeros_like(v) for k, v in load_file(shard).items()})
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "manifest.json").unlink(missing_ok=True)


def stop_tokens_disagree(folder: Path) -> None:
    """The chat template ends a turn with <|im_end|>, but every stop token the server
    reads (the tokenizer's eos, config.json and generation_config.json eos_token_id) says
    <|endoftext|>: a generation that never stops at the end of its turn."""
    _edit_json(folder, "tokenizer_config.json", lambda c: c.update(eos_token="<|endoftext|>"))
    if (folder / "special_tokens_map.json").exists():
        _edit_json(folder, "special_tokens_map.json", lambda c: c.update(eos_token="<|endoftext|>"))
    _edit_json(folder, "config.json", lambda c: c.update(eos_token_id=0))
    if (folder / "generation_config.json").exists():
        _edit_json(folder, "generation_config.json", lambda c: c.update(eos_token_id=0))


def _quantized(dtype: str, name_suffix: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        import torch

        target = getattr(torch, dtype)
        top = 127.0 if dtype == "int8" else 448.0

        def change(t: dict[str, Any]) -> None:
            name = next(n for n in sorted(t) if n.endswith(name_suffix))
            w = t[name].float()
            q = w / (w.abs().max() / top)  # per-tensor quantized, the scale not applied: what such a file holds
            t[name] = q.round().to(target) if dtype == "int8" else q.to(target)

        edit_tensors(folder, change)
    return apply


def transformers_default_tokenizer_config(folder: Path) -> None:
    """The tokenizer as transformers saves it without a maximum length: model_max_length
    int(1e30), and every field transformers 5 writes by default."""
    from transformers import AutoTokenizer

    _edit_json(folder, "tokenizer_config.json", lambda c: c.pop("model_max_length", None))
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    doc = _json(folder, "tokenizer_config.json")
    assert doc.get("model_max_length", 0) >= 10**29, doc.get("model_max_length")


def qwen3_moe_transformers5_config(folder: Path) -> None:
    """Qwen3-MoE's config as transformers 5 writes it: the expert count under its
    transformers-5 name num_local_experts only (transformers 4 wrote num_experts)."""
    def spell(c: dict[str, Any]) -> None:
        n = c.pop("num_experts", None)
        c["num_local_experts"] = c.get("num_local_experts", n)
        assert isinstance(c["num_local_experts"], int)

    _edit_json(folder, "config.json", spell)


# Seen with vLLM 0.32.0 on the tiny models of the whole matrix (make test-vllm).
GEMMA3_FLAT_ROPE: dict[str, tuple[Behaviour, str]] = {
    "gemma3_text": ("identical", "Gemma-3 reads rope settings per layer type (full_attention, sliding_attention) "
                                 "and gives a layer type it does not find the default: flat settings are not read")}
_ZERO_NORM = ("identical", "Gemma's norm weight is an offset from 1, all zero in an untrained model: the int8 codes "
                           "are the same zeros")
GEMMA_ZERO_NORMS: dict[str, tuple[Behaviour, str]] = {"gemma2": _ZERO_NORM, "gemma3_text": _ZERO_NORM}
_CAST = ("identical", "vLLM loads the FP8 codes (scale not applied) and answers this tiny model within the "
                      "tolerance of the unmutated folder")
FP8_CAST_UNSEEN: dict[str, tuple[Behaviour, str]] = {"gemma2": _CAST, "gemma3_text": _CAST, "qwen2": _CAST}

CATALOGUE: tuple[Mutation, ...] = (
    Mutation("value_head", "TRL value head (v_head.summary.weight/bias) left in", "refuses", value_head),
    # vLLM >= its maybe_untie_word_embeddings: a tied config whose checkpoint has an lm_head is loaded untied
    Mutation("tied_flag_with_own_head", "lm_head present while tie_word_embeddings is true", "identical",
             tied_flag_with_own_head, applies=_untied),
    # vLLM loads it and serves from an output layer nothing initialised
    Mutation("untied_without_head", "lm_head missing while tie_word_embeddings is false", "misbehaves",
             untied_without_head, applies=_untied),
    Mutation("vocab_size_above_rows", "vocab_size above the embedding rows", "refuses", vocab_size_above_rows,
             applies=_text_only),
    Mutation("tokenizer_beyond_rows", "tokenizer larger than the embedding rows / vocab_size", "refuses",
             tokenizer_beyond_rows),
    Mutation("rows_padded_above_tokenizer", "embedding rows = vocab_size, padded above the tokenizer", "identical",
             rows_padded_above_tokenizer, applies=_text_only),
    Mutation("leftover_quantization_config", "quantization_config left over on bf16 weights", "refuses",
             leftover_quantization_config),
    Mutation("rope_type_unknown", "a rope scaling type transformers does not define", "refuses", rope_type_unknown,
             expect_on=GEMMA3_FLAT_ROPE),
    Mutation("rope_llama3_incomplete", "llama3 rope scaling without its frequency factors", "refuses",
             rope_llama3_incomplete, expect_on=GEMMA3_FLAT_ROPE),
    Mutation("architecture_unknown", "an architectures class vLLM does not know beside a known model_type",
             "refuses", architecture_unknown),
    Mutation("no_chat_template", "no chat template (chat/completions)", "refuses", no_chat_template),
    Mutation("bin_beside_safetensors", "a stale .bin beside the safetensors", "identical", bin_beside_safetensors),
    Mutation("stop_tokens_disagree", "stop tokens that disagree with the chat template (generation never stops)",
             "misbehaves", stop_tokens_disagree),
    Mutation("int8_norm", "an int8 tensor where a bf16 norm belongs", "misbehaves",
             _quantized("int8", "layers.0.input_layernorm.weight"),
             applies=_has_tensor("layers.0.input_layernorm.weight"), expect_on=GEMMA_ZERO_NORMS),
    Mutation("fp8_attention", "an FP8 tensor where a bf16 attention projection belongs", "misbehaves",
             _quantized("float8_e4m3fn", "layers.0.self_attn.q_proj.weight"),
             applies=_has_tensor("layers.0.self_attn.q_proj.weight"), expect_on=FP8_CAST_UNSEEN),
    Mutation("transformers_default_tokenizer_config", "the tokenizer config transformers writes by default",
             "identical", transformers_default_tokenizer_config),
    Mutation("qwen3_moe_transformers5_config", "a Qwen3-MoE config saved by transformers 5", "identical",
             qwen3_moe_transformers5_config, architecture="qwen3_moe"),
    Mutation("deepseek_config_from_transformers", "a DeepSeek-V3 config without topk_method \"noaux_tc\" (as "
             "transformers' DeepseekV3Config writes it)", "refuses", deepseek_config_from_transformers,
             architecture="deepseek_v3"),
    Mutation("deepseek_routing_unsaid", "a DeepSeek-V3 config without scoring_func (vLLM weighs the experts with "
             "softmax, transformers with a sigmoid)", "misbehaves", deepseek_routing_unsaid,
             architecture="deepseek_v3"),
)


def applied(mutation: Mutation, good: Path, out: Path) -> Path:
    """A copy of the good folder ``good`` with ``mutation`` applied."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(good, out)
    mutation.apply(out)
    return out
