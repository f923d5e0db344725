"""config.json and tokenizer_config.json parse, name an architecture, and ask for no
remote code (Vertex serves with vLLM, which would need trust_remote_code)."""

from __future__ import annotations

from tune2serve.components.checkpoint.bounded_json import max_bytes_for
from tune2serve.components.validate.context import Checkpoint, JsonFile
from tune2serve.components.validate.findings import Finding, error, info
from tune2serve.components.validate.supported import load_supported


def check_config(ckpt: Checkpoint) -> list[Finding]:
    found = _json_problems(ckpt.config, "config-not-json")
    doc = ckpt.config_doc
    if doc is not None:
        if not doc.get("model_type") and not doc.get("architectures"):
            found.append(error("config-no-architecture", "config.json names neither model_type nor architectures; "
                                                         "save the config with transformers' save_pretrained", "config.json"))
        if "auto_map" in doc:
            found.append(_native_auto_map(doc) or _remote_code("config.json", doc["auto_map"]))
    found += _json_problems(ckpt.tokenizer_config, "tokenizer-config-not-json")
    tok = ckpt.tokenizer_config.doc
    if isinstance(tok, dict) and "auto_map" in tok:
        found.append(_remote_code("tokenizer_config.json", tok["auto_map"]))
    return found


def _json_problems(jf: JsonFile, code: str) -> list[Finding]:
    if jf.error in ("missing", "empty"):  # reported by the files check
        return []
    if jf.error == "too-large":
        return [error(code, f"{jf.name} is above the {max_bytes_for(jf.name)}-byte limit for this file: "
                            "it is not a real configuration file", jf.name)]
    if jf.error:
        return [error(code, f"{jf.name} is {jf.error}", jf.name)]
    if not isinstance(jf.doc, dict):
        return [error(code, f"{jf.name} holds a JSON {type(jf.doc).__name__}, not an object", jf.name)]
    return []


def _native_auto_map(doc: dict[str, object]) -> Finding | None:
    """``auto_map`` that only restates a native implementation (the published
    DeepSeek-V3 config maps to its own ``DeepseekV3ForCausalLM`` copy) is never used:
    without trust_remote_code the server builds the native class from ``model_type``.
    It qualifies when ``model_type`` is a supported family and every class it names is
    that architecture's (``DeepseekV3Config``, ``DeepseekV3Model``…); a class of another
    name is custom code the native class does not reproduce, and stays an error."""
    model_type = doc.get("model_type")
    family = load_supported().family_for(model_type, []) if isinstance(model_type, str) else None
    auto_map = doc.get("auto_map")
    if family is None or not isinstance(auto_map, dict) or not auto_map:
        return None
    stems = tuple(a.split("For", 1)[0] for a in family.architectures if "For" in a)
    names = [v for v in auto_map.values()]
    classes = [n.rsplit(".", 1)[-1] for n in names if isinstance(n, str)]
    if not stems or len(classes) != len(names) or not all(c.startswith(stems) for c in classes):
        return None
    return info("remote-code-ignored", f"config.json has auto_map ({', '.join(sorted(classes))}), but these are the "
                                       f"native {model_type} classes: the server ignores auto_map (no "
                                       "trust_remote_code) and builds them from transformers", "config.json")


def _remote_code(name: str, auto_map: object) -> Finding:
    classes = ", ".join(sorted(str(v) for v in auto_map.values())) if isinstance(auto_map, dict) else str(auto_map)
    return error("remote-code", f"{name} has auto_map ({classes}): the model needs custom Python code, which the "
                                "serving container never runs (no trust_remote_code). Export it as a supported "
                                "transformers architecture and remove auto_map", name)
