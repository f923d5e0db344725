"""Generates ``components/validate/config_defaults.json`` from the transformers config
classes (``python -m tests.validate.config_defaults_gen`` rewrites it;
``test_config_defaults.py`` fails when the file is not what this produces).

validate reads raw config.json without importing transformers, but the server builds
the model from the config *class*, whose defaults fill every absent key (Gemma-3's
``head_dim`` 256, Gemma-3-4B's ``num_attention_heads`` 8). Only plain defaults are
recorded: values derived in ``__post_init__`` (Llama's ``head_dim`` = hidden / heads,
Qwen3-Next's ``layer_types``) are computed by ``validate.architectures``.

Each class's ``attribute_map`` is recorded too: transformers renames keys between versions
and reads either spelling (a Qwen3-MoE config saved by transformers 5 says
``num_local_experts`` where transformers 4 wrote ``num_experts``), so validate must too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parents[2] / "components" / "validate" / "config_defaults.json"
# Multimodal wrappers: the model_type of their text_config when the file omits it.
TEXT_CONFIG_TYPES = {"gemma3": "gemma3_text", "llama4": "llama4_text"}


def _plain(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value)


def generate() -> dict[str, Any]:
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from tune2serve.components.validate.supported import load_supported

    model_types = sorted({t for f in load_supported().families for t in f.model_types} | set(TEXT_CONFIG_TYPES.values()))
    defaults: dict[str, dict[str, Any]] = {}
    aliases: dict[str, dict[str, str]] = {}
    for model_type in model_types:
        cls = CONFIG_MAPPING[model_type]
        if getattr(cls, "attribute_map", None):
            aliases[model_type] = dict(sorted(cls.attribute_map.items()))
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING and f.default is not None and _plain(f.default):
                values[f.name] = f.default
        defaults[model_type] = dict(sorted(values.items()))
    return {
        "generated_by": "tests/validate/config_defaults_gen.py",
        "transformers_version": transformers.__version__,
        "text_config_types": TEXT_CONFIG_TYPES,
        "aliases": aliases,
        "defaults": defaults,
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render(generate()), encoding="utf-8")
    print(f"wrote {TARGET}")
