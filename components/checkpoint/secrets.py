"""Credentials that ride along in checkpoint files, and in URLs.

``save_pretrained`` used to write the kwargs it was given into ``config.json`` and
``tokenizer_config.json``, so a hub token passed as ``token=``/``use_auth_token=``
ends up next to the weights, and an export would upload it. The keys are dropped from
every JSON file export copies (each drop logged with file and key), validate warns on
them, and ``redact`` removes ``user:password@`` from any URL in a message.
"""

from __future__ import annotations

import re
from typing import Any

SECRET_KEYS = frozenset({
    "token", "use_auth_token", "hub_token", "hf_token", "api_key", "apikey", "access_token", "auth_token",
    "secret", "secret_key", "password", "hub_private_token", "private_key", "aws_secret_access_key",
    "wandb_api_key", "openai_api_key",
})
# A value that is a credential whatever its key: Hugging Face user/org tokens.
_TOKEN_VALUE = re.compile(r"hf_[A-Za-z0-9]{30,}")
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]+(:[^/\s@]*)?@")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:token|access_token|api_key|key|sig|signature|x-goog-signature)=)[^&\s]+")
# Files whose keys are names of tokens, not settings: never scrubbed.
VOCABULARY_FILES = frozenset({"tokenizer.json", "vocab.json", "added_tokens.json", "special_tokens_map.json"})


def _is_secret(key: object, value: object) -> bool:
    return (isinstance(key, str) and key.lower() in SECRET_KEYS and value not in (None, False, "")) or (
        isinstance(value, str) and bool(_TOKEN_VALUE.fullmatch(value.strip())))


def find_secrets(doc: Any, path: str = "") -> list[str]:
    """The dotted paths of credential-like keys in a config document (nested objects
    included: ``text_config.token``)."""
    found: list[str] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            where = f"{path}.{key}" if path else str(key)
            if _is_secret(key, value):
                found.append(where)
            elif isinstance(value, dict):
                found += find_secrets(value, where)
    return found


def scrub(doc: Any) -> tuple[Any, list[str]]:
    """A copy of ``doc`` without credential-like keys, and the dotted paths dropped."""
    if not isinstance(doc, dict):
        return doc, []
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in doc.items():
        if _is_secret(key, value):
            dropped.append(str(key))
            continue
        if isinstance(value, dict):
            value, inner = scrub(value)
            dropped += [f"{key}.{k}" for k in inner]
        out[key] = value
    return out, dropped


def redact(text: str) -> str:
    """``text`` with credentials removed from every URL in it (``user:pass@`` and
    token-like query parameters)."""
    return _QUERY_SECRET.sub(r"\1***", _URL_CREDENTIALS.sub(r"\g<scheme>***@", text))


def scrub_json_files(files: dict[str, bytes]) -> list[tuple[str, str]]:
    """Drops credential-like keys from every JSON file in ``files`` (name → bytes, as
    export is about to write them; changed in place) and returns (file, key) for each
    key dropped. Vocabulary files, whose keys are tokens, are left alone. A file that
    is not a JSON object raises ``JsonLimitError`` naming it."""
    import json

    from tune2serve.components.checkpoint import bounded_json

    dropped: list[tuple[str, str]] = []
    for name in sorted(files):
        if not name.endswith(".json") or name.rsplit("/", 1)[-1] in VOCABULARY_FILES or name.endswith(".index.json"):
            continue
        doc = bounded_json.load_object(files[name], name)
        clean, keys = scrub(doc)
        if keys:
            files[name] = (json.dumps(clean, indent=2, ensure_ascii=False) + "\n").encode()
            dropped += [(name, k) for k in keys]
    return dropped
