"""``validate.architectures`` against transformers itself: for a tiny config of every
supported class, the tensors it requires of each layer are exactly those the class holds
on disk (meta device, weight conversions reverted); and ``config_defaults.json`` is what
the installed transformers' config classes default to."""

from __future__ import annotations

import pytest

from tests.validate.config_defaults_gen import TARGET, generate, render
from tests.validate.meta_layouts import TINY, meta_layout, tiny_config
from tune2serve.components.validate.architectures import effective_text_config, layer_tensors
from tune2serve.components.validate.memory import kv_bytes_per_token


def test_config_defaults_file_is_current() -> None:
    """Regenerate with ``.venv/bin/python -m tests.validate.config_defaults_gen``."""
    assert TARGET.read_text(encoding="utf-8") == render(generate())


@pytest.mark.parametrize("key", sorted(TINY))
def test_required_layer_tensors_are_what_transformers_saves(key: str) -> None:
    class_name, _ = TINY[key]
    cfg = tiny_config(key)
    layout = meta_layout(class_name, cfg)
    text = effective_text_config(cfg)
    for i in range(cfg["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        saved = {n.removeprefix(prefix): shape for n, (shape, _dtype) in layout.items() if n.startswith(prefix)}
        assert layer_tensors(text, i, set(saved)) == saved, f"layer {i}"


def test_gemma3_absent_keys_take_the_class_defaults() -> None:
    """Gemma-3-4B's text_config names neither num_attention_heads nor head_dim."""
    doc = {"model_type": "gemma3", "text_config": {"hidden_size": 2560, "num_hidden_layers": 34,
                                                   "num_key_value_heads": 4}}
    text = effective_text_config(doc)
    assert (text["model_type"], text["num_attention_heads"], text["head_dim"]) == ("gemma3_text", 8, 256)
    layer = layer_tensors(text, 0)
    assert layer is not None and layer["self_attn.q_proj.weight"] == (8 * 256, 2560)
    assert kv_bytes_per_token(text) == 2 * 34 * 4 * 256 * 2


def test_explicit_null_beats_the_class_default() -> None:
    """DeepSeek's ``q_lora_rank: null`` means an uncompressed query, not the default 1536."""
    cfg = {**tiny_config("deepseek_v3"), "q_lora_rank": None}
    layer = layer_tensors(effective_text_config(cfg), 0)
    assert layer is not None and "self_attn.q_proj.weight" in layer and "self_attn.q_a_proj.weight" not in layer


def test_unknown_architecture_requires_nothing() -> None:
    assert layer_tensors(effective_text_config({"model_type": "falcon", "hidden_size": 8,
                                                "num_attention_heads": 2}), 0) is None
