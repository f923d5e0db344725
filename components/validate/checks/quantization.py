"""No user-applied quantization (Vertex AI does not import quantized models).

Rule: a ``quantization_config`` is accepted only when (family, quant_method) is how the
family's weights are *published*: DeepSeek-V3/R1/V3.1 (``deepseek_v3``) with ``fp8``,
gpt-oss (``gpt_oss``) with ``mxfp4``; that gives an info finding. Any other
``quantization_config`` (gptq, awq, bitsandbytes, aqlm, hqq, eetq, exl2,
compressed-tensors, fp8 on another family, ...) is the error ``quantized-user``. Outside
those native pairs, tensors that only quantized checkpoints hold (``qweight``,
``qzeros``, ``scales``, ``g_idx``, bitsandbytes' ``absmax``/``quant_map``/``SCB``,
integer-typed ``weight``, FP8/FP4 dtypes) are the error ``quantized-weights``.
"""

from __future__ import annotations

from tune2serve.components.checkpoint.safetensors_header import FP8_DTYPES
from tune2serve.components.validate.context import CONFIG, Checkpoint
from tune2serve.components.validate.findings import Finding, error, info
from tune2serve.components.validate.supported import load_supported

QUANT_TENSOR_NAMES = frozenset({"qweight", "qzeros", "scales", "g_idx", "absmax", "quant_map", "SCB",
                                "weight_packed", "weight_zero_point", "weight_scale", "input_scale"})
INT_DTYPES = frozenset({"I8", "U8", "I16", "U16", "I32", "U32"})
LOW_FLOAT_DTYPES = FP8_DTYPES | {"F4", "F6_E2M3", "F6_E3M2"}


def native_quantization(model_type: str | None, quant_method: str) -> bool:
    """True when ``quant_method`` is how the family's weights are published."""
    family = load_supported().family_for(model_type, [])
    return family is not None and quant_method in family.native_quantization


def declared_native(ckpt: Checkpoint) -> bool:
    """The config declares the family's published quantization (DeepSeek fp8, gpt-oss mxfp4)."""
    doc = ckpt.config_doc or {}
    qc = ckpt.text_config.get("quantization_config", doc.get("quantization_config"))
    method = str(qc.get("quant_method", "")).lower() if isinstance(qc, dict) else ""
    model_type = doc.get("model_type") if isinstance(doc.get("model_type"), str) else None
    return bool(method) and native_quantization(model_type, method)


def check_quantization(ckpt: Checkpoint) -> list[Finding]:
    doc = ckpt.config_doc
    if doc is None:
        return []
    text = ckpt.text_config
    model_type = doc.get("model_type") if isinstance(doc.get("model_type"), str) else None
    found: list[Finding] = []
    native = False
    qc = text.get("quantization_config", doc.get("quantization_config"))
    if qc is not None:
        method = str(qc.get("quant_method", "")).lower() if isinstance(qc, dict) else ""
        if method and native_quantization(model_type, method):
            native = True
            found.append(info("native-quantization", f"{method} weights are how {model_type} is published; "
                                                     "accepted as native, not user-applied quantization", CONFIG))
        else:
            found.append(error("quantized-user", f"{CONFIG} has quantization_config (quant_method "
                                                 f"{method or 'unknown'!r}): Vertex AI does not import quantized "
                                                 "models. Export the full-precision (bf16) merged weights instead", CONFIG))
    for key in ("load_in_4bit", "load_in_8bit"):
        if text.get(key) is True:
            found.append(error("quantized-user", f"{CONFIG} sets {key}: bitsandbytes quantization is not importable", CONFIG))
    if not native:
        found += _quantized_tensors(ckpt)
    return found


def is_quantized_tensor(name: str, dtype: str) -> bool:
    """A tensor only quantized checkpoints hold (by name or dtype); outside the native
    pairs each is a ``quantized-weights`` finding."""
    last = name.rsplit(".", 1)[-1]
    return (last in QUANT_TENSOR_NAMES or "quant_state" in name or dtype in LOW_FLOAT_DTYPES
            or (last == "weight" and dtype in INT_DTYPES))


def _quantized_tensors(ckpt: Checkpoint) -> list[Finding]:
    by_file: dict[str, list[str]] = {}
    for name, t in ckpt.tensors.items():
        if is_quantized_tensor(name, t.dtype):
            by_file.setdefault(ckpt.tensor_files[name], []).append(f"{name} ({t.dtype})")
    return [error("quantized-weights", f"{file} holds quantized tensors: {', '.join(items[:3])}"
                                       f"{f' and {len(items) - 3} more' if len(items) > 3 else ''}; Vertex AI does "
                                       "not import quantized models", file)
            for file, items in by_file.items()]
