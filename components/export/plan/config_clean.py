"""``config.json`` and ``generation_config.json`` for a deployable folder.

Training leaves marks in a config that a server should not see: ``use_cache: false``
(forced by gradient checkpointing), ``_name_or_path`` pointing at a training machine's
disk, a stale ``transformers_version``, a ``torch_dtype`` that no longer matches the
weights. After a merge the config must also describe the tensors actually written:
``vocab_size`` = the embedding's rows and ``tie_word_embeddings`` false whenever an
``lm_head`` of its own is written. ``quantization_config`` is carried over when present
and never invented (validate refuses user-applied quantization).
"""

from __future__ import annotations

from typing import Any

TRAINING_ONLY_KEYS = ("_name_or_path", "_commit_hash", "gradient_checkpointing", "_attn_implementation_autoset",
                      "use_gradient_checkpointing", "_attn_implementation")
GENERATION_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
    "chat_template.json",
)


def transformers_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


def clean_config(config: dict[str, Any], *, dtype: str, vocab_size: int | None = None,
                 tie_word_embeddings: bool | None = None, version: str | None = None) -> dict[str, Any]:
    """A copy of ``config`` fit for serving: training-only keys dropped, ``use_cache``
    true, ``dtype`` (and ``torch_dtype`` where the config used that name) the output
    dtype, ``transformers_version`` refreshed, vocabulary and tying set to what was
    written (None leaves them as they are)."""
    out = {k: v for k, v in config.items() if k not in TRAINING_ONLY_KEYS}
    if "use_cache" in out or out.get("model_type"):
        out["use_cache"] = True
    out["dtype"] = dtype
    if "torch_dtype" in config:
        out["torch_dtype"] = dtype
    if version:
        out["transformers_version"] = version
    text = out.get("text_config") if isinstance(out.get("text_config"), dict) else None
    if vocab_size is not None:
        if text is not None and "vocab_size" in text:
            out["text_config"] = {**text, "vocab_size": vocab_size}
        else:
            out["vocab_size"] = vocab_size
    if tie_word_embeddings is not None:
        out["tie_word_embeddings"] = tie_word_embeddings
        if text is not None and "tie_word_embeddings" in text:
            out["text_config"] = {**out["text_config"], "tie_word_embeddings": tie_word_embeddings}
    return out


def generation_config_from(config: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """A minimal ``generation_config.json`` from the model config's token ids, as
    transformers' ``GenerationConfig.from_model_config`` makes one."""
    out: dict[str, Any] = {k: config[k] for k in GENERATION_KEYS if config.get(k) is not None}
    if version:
        out["transformers_version"] = version
    return out


def is_tied(config: dict[str, Any]) -> bool:
    """Whether the model ties lm_head to the input embedding: the config's flag, which
    transformers defaults to true when absent."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    value = config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    return bool(value)


def config_dtype(config: dict[str, Any]) -> str | None:
    value = config.get("dtype") or config.get("torch_dtype")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    value = value or text.get("dtype") or text.get("torch_dtype")
    return str(value).removeprefix("torch.") if value else None
