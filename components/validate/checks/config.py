"""config.json and tokenizer_config.json parse, name an architecture, and ask for no
remote code (Vertex serves with vLLM, which would need trust_remote_code)."""

from __future__ import annotations

from tune2serve.components.validate.context import Checkpoint, JsonFile
from tune2serve.components.validate.findings import Finding, error


def check_config(ckpt: Checkpoint) -> list[Finding]:
    found = _json_problems(ckpt.config, "config-not-json")
    doc = ckpt.config_doc
    if doc is not None:
        if not doc.get("model_type") and not doc.get("architectures"):
            found.append(error("config-no-architecture", "config.json names neither model_type nor architectures; "
                                                         "save the config with transformers' save_pretrained", "config.json"))
        if "auto_map" in doc:
            found.append(_remote_code("config.json", doc["auto_map"]))
    found += _json_problems(ckpt.tokenizer_config, "tokenizer-config-not-json")
    tok = ckpt.tokenizer_config.doc
    if isinstance(tok, dict) and "auto_map" in tok:
        found.append(_remote_code("tokenizer_config.json", tok["auto_map"]))
    return found


def _json_problems(jf: JsonFile, code: str) -> list[Finding]:
    if jf.error in ("missing", "empty"):  # reported by the files check
        return []
    if jf.error == "too-large":
        return [error(code, f"{jf.name} is too large to be a config file", jf.name)]
    if jf.error:
        return [error(code, f"{jf.name} is {jf.error}", jf.name)]
    if not isinstance(jf.doc, dict):
        return [error(code, f"{jf.name} holds a JSON {type(jf.doc).__name__}, not an object", jf.name)]
    return []


def _remote_code(name: str, auto_map: object) -> Finding:
    classes = ", ".join(sorted(str(v) for v in auto_map.values())) if isinstance(auto_map, dict) else str(auto_map)
    return error("remote-code", f"{name} has auto_map ({classes}): the model needs custom Python code, which the "
                                "serving container never runs (no trust_remote_code). Export it as a supported "
                                "transformers architecture and remove auto_map", name)
