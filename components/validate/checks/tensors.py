"""Every tensor is one the architecture has, and holds floats where floats belong.

vLLM copies each tensor of the checkpoint into the parameter of the same name and
refuses the load when there is none (``There is no module or parameter named 'v_head'
in LlamaForCausalLM``: a TRL value head saved with the model; transformers loads the same
folder, dropping it with a warning, so only vLLM fails — after the GPUs are provisioned).
Proven against vLLM itself by ``tests/vllm/test_mutations.py``.

A parameter of vLLM's model is a float; a tensor stored as integers or FP8 where a bf16
norm, bias or projection belongs is cast on load, value by value — a quantized tensor
(its scale not applied) becomes garbage that serves. Outside the native pairs the
quantization check names int/FP8 *weights* (``quantized-weights``); this check covers
what that leaves: the native families (gpt-oss, DeepSeek), where FP8/MXFP4 are allowed
only in their published form, and dtypes such as I64 or BOOL anywhere.

Rules for the tensors the architecture knows (``validate.architectures``): names under
the language model's prefix are its embedding, final norm and ``layers.N.<known>``;
``lm_head.weight``; an FP8 weight's ``weight_scale_inv``; rotary caches (``rotary_emb.*``, skipped by the server). Multi-token
prediction layers (DeepSeek), Qwen3-Next's ``mtp.*`` and the other towers of multimodal
configs (vision) are not judged here.
"""

from __future__ import annotations

from typing import Any

from tune2serve.components.checkpoint.safetensors_header import FLOAT_DTYPES, FP8_DTYPES
from tune2serve.components.validate.architectures import KNOWN, layer_tensors
from tune2serve.components.validate.checks import config_bounds
from tune2serve.components.validate.checks.quantization import declared_native, is_quantized_tensor
from tune2serve.components.validate.checks.shapes import _PEFT_WRAPPED, _by_layer, _lm_prefix
from tune2serve.components.validate.context import CONFIG, Checkpoint
from tune2serve.components.validate.findings import Finding, error

MAX_NAMED = 5
_OTHER_ROOTS = {"qwen3_next": ("mtp.",)}


def check_tensors(ckpt: Checkpoint) -> list[Finding]:
    doc = ckpt.config_doc
    cfg = ckpt.text_config
    if doc is None or not ckpt.tensors or cfg.get("model_type") not in KNOWN or not config_bounds.plausible(ckpt):
        return []
    if any(_PEFT_WRAPPED.search(n) for n in ckpt.tensors):
        return []  # a PeftModel's state dict: peft-wrapper-names says what is wrong, once
    known = _known_tensors(ckpt, cfg, multimodal=isinstance(doc.get("text_config"), dict))
    if known is None:
        return []
    expected, unjudged = known
    found = _unexpected(ckpt, cfg, expected, unjudged)
    found += _non_float(ckpt, expected)
    return found


def _known_tensors(ckpt: Checkpoint, cfg: dict[str, Any], multimodal: bool) -> tuple[set[str], set[str]] | None:
    """(the tensors the architecture has, tensors not judged here); None when a layer's
    tensors are not known from this config. Layers past ``num_hidden_layers`` are not
    judged: DeepSeek's multi-token-prediction layers hold modules of their own, and any
    other is ``layer-count-mismatch``."""
    prefix = _lm_prefix(ckpt)
    layers = cfg.get("num_hidden_layers") if isinstance(cfg.get("num_hidden_layers"), int) else 0
    expected = {prefix + "embed_tokens.weight", prefix + "norm.weight"}
    expected |= {n for n in ckpt.tensors if n == "lm_head.weight" or n.endswith(".lm_head.weight")}
    unjudged: set[str] = set()
    for i, held in _by_layer(ckpt, prefix).items():
        if i >= layers:  # multi-token-prediction layers (DeepSeek): their own modules; beyond: layer-count-mismatch
            unjudged |= set(held.values())
            continue
        rules = layer_tensors(cfg, i, set(held))
        if rules is None:
            return None
        expected |= {f"{prefix}layers.{i}.{rel}" for rel in rules}
    expected |= {n + "_scale_inv" for n in expected if n + "_scale_inv" in ckpt.tensors}  # FP8 block scales
    roots = _OTHER_ROOTS.get(str(cfg.get("model_type")), ())
    for name in ckpt.tensors:
        other_tower = multimodal and not name.startswith(prefix) and not name.endswith("lm_head.weight")
        if other_tower or name.startswith(roots) or ".rotary_emb." in name or name.startswith("rotary_emb."):
            unjudged.add(name)
    return expected, unjudged


def _unexpected(ckpt: Checkpoint, cfg: dict[str, Any], expected: set[str], unjudged: set[str]) -> list[Finding]:
    extra = sorted(n for n in ckpt.tensors if n not in expected and n not in unjudged)
    if not extra:
        return []
    named = ", ".join(extra[:MAX_NAMED]) + (f" and {len(extra) - MAX_NAMED} more" if len(extra) > MAX_NAMED else "")
    return [error("unexpected-tensor", f"{len(extra)} tensors are not parameters of {cfg.get('model_type')} with this "
                                       f"{CONFIG}: {named}. vLLM refuses to load a tensor its model has no parameter "
                                       "for (a TRL value head v_head.*, another model's modules): remove them",
                  ckpt.tensor_files[extra[0]])]


def _native_form(ckpt: Checkpoint, name: str, dtype: str) -> bool:
    """FP8 weights with their block scales (DeepSeek), MXFP4 blocks and scales (gpt-oss)."""
    if dtype in FP8_DTYPES and name.endswith(".weight"):
        return name + "_scale_inv" in ckpt.tensors
    return dtype == "U8" and name.endswith(("_blocks", "_scales"))


def _non_float(ckpt: Checkpoint, expected: set[str]) -> list[Finding]:
    native = declared_native(ckpt)
    bad = []
    for name in sorted(expected & set(ckpt.tensors)):
        dtype = ckpt.tensors[name].dtype
        if dtype in FLOAT_DTYPES or (native and _native_form(ckpt, name, dtype)):
            continue
        if not native and is_quantized_tensor(name, dtype):
            continue  # named by the quantization check (quantized-weights)
        bad.append(f"{name} ({dtype})")
    if not bad:
        return []
    first = bad[0].split(" ", 1)[0]
    named = ", ".join(bad[:MAX_NAMED]) + (f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else "")
    return [error("non-float-weights", f"{len(bad)} tensors hold a non-float dtype where the model's parameters are "
                                       f"floats: {named}. vLLM would cast them on load and serve garbage; save these "
                                       "tensors in bf16", ckpt.tensor_files[first])]
