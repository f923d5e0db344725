"""Credentials that ride along in checkpoint files, and in URLs: found by key and by value.

``save_pretrained`` used to write the kwargs it was given into ``config.json`` and
``tokenizer_config.json``, so a hub token passed as ``token=``/``use_auth_token=`` ends up
next to the weights; a ``name_or_path`` cloned as ``https://hf_…@host/…`` carries its
token in the URL; a config copied from a serving setup carries an ``Authorization:
Bearer …`` header. An export would upload every one of them, and every deployment would
serve them to whoever reads the bucket. So, at any depth of a JSON document:

- by key: a credential-like key (``token``, ``use_auth_token``, ``Authorization``, ...)
  with a value is dropped;
- by value: URL userinfo (``scheme://user:pass@host``, ``https://hf_…@host``) is removed
  from the URL, the rest of the URL kept, as are token-bearing query parameters
  (``token=``, ``X-Goog-Signature=``, ...); a string holding an ``Authorization``/
  ``Bearer``/``Basic`` credential or a provider token shape (``hf_…``, ``ya29.…``,
  ``AIza…``, ``ghp_…``/``github_pat_…``, ``sk-proj-…``/``sk-ant-…``/OpenAI's legacy
  ``sk-…T3BlbkFJ…``, a ``-----BEGIN … PRIVATE KEY-----`` block) is dropped whole.

Each drop is reported as the file and the JSON path (``config.json: $.a.b[2].url``),
never with the value: a key that is itself token-shaped shows as ``[redacted]``.
Export drops them from every JSON file it copies, validate warns on them, ``redact``
removes the same shapes from any text (messages, logs, reports).

What is never flagged (tests/corpus/ holds what real tools write): vocabulary files and
the added tokens of ``tokenizer_config.json`` (their strings are tokens, and dropping one
would change the tokenizer); ``sk-`` followed by anything but the unambiguous forms above;
long base64-like strings (no entropy rule); the words Bearer/Basic in prose (a credential
is ``Bearer <token of 16+ characters with a digit>``, ``Basic <base64 of user:password>``,
or ``Authorization: <scheme> <token>``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

SECRET_KEYS = frozenset({
    "token", "use_auth_token", "hub_token", "hf_token", "api_key", "apikey", "access_token", "auth_token",
    "secret", "secret_key", "password", "hub_private_token", "private_key", "aws_secret_access_key",
    "wandb_api_key", "openai_api_key", "authorization", "proxy_authorization", "x_api_key", "client_secret",
    "refresh_token", "id_token", "bearer_token", "hf_hub_token", "huggingface_token", "github_token",
})
# Provider token shapes: each unambiguous on its own, matched anywhere in a string.
_EDGE = r"(?<![A-Za-z0-9_])"
TOKEN_SHAPES: dict[str, re.Pattern[str]] = {
    "a Hugging Face token": re.compile(_EDGE + r"hf_[A-Za-z0-9]{30,}"),
    "a Google OAuth access token": re.compile(_EDGE + r"ya29\.[A-Za-z0-9_-]{20,}"),
    "a Google API key": re.compile(_EDGE + r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    "a GitHub token": re.compile(_EDGE + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    "an OpenAI or Anthropic key": re.compile(
        _EDGE + r"sk-(?:(?:proj|ant|svcacct|admin)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})"),
    "a private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "an Authorization header": re.compile(
        r"(?i)\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?\s*(?:bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"),
}
_BEARER = re.compile(r"(?i)\bBearer\s+(?=[A-Za-z0-9._~+/-]*[0-9])[A-Za-z0-9._~+/-]{16,}=*")
_BASIC = re.compile(r"(?i)\bBasic\s+([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]+(:[^/\s@]*)?@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:token|access_token|api_key|apikey|key|sig|signature|x-goog-signature|x-amz-signature|"
    r"x-goog-credential|x-amz-credential)=)[^&#\s\"']+")
_PRIVATE_BLOCK = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|.*)",
                            re.S)
# Files whose keys and strings are tokens of the model, not settings: never scrubbed.
VOCABULARY_FILES = frozenset({"tokenizer.json", "vocab.json", "added_tokens.json", "special_tokens_map.json"})
# Subtrees of tokenizer_config.json that hold tokens (the added vocabulary), likewise.
_TOKEN_SUBTREES = frozenset({"added_tokens_decoder", "added_tokens", "additional_special_tokens",
                             "extra_special_tokens"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
REDACTED = "[redacted]"


@dataclass(frozen=True)
class SecretHit:
    """One credential found: where (``$.a.b[2].url``), what it looked like, and whether
    the value was ``dropped`` or only the URL's credentials were ``removed``. Holds no
    part of the secret."""

    path: str
    what: str
    action: str  # "dropped" | "credentials removed"

    def describe(self, file: str) -> str:
        if self.action == "dropped":
            return f"{file}: {self.path} holds {self.what}; dropped"
        return f"{file}: {self.path} is a URL carrying {self.what}; the credentials were removed, the URL kept"


def _key_secret(key: object, value: object) -> bool:
    return (isinstance(key, str) and key.lower().replace("-", "_") in SECRET_KEYS
            and value not in (None, False, "", [], {}))


def shape_of(text: str) -> str | None:
    """What credential ``text`` holds (its shape, in words), or None."""
    for what, pattern in TOKEN_SHAPES.items():
        if pattern.search(text):
            return what
    if _BEARER.search(text):
        return "a Bearer credential"
    if any(_is_basic_credential(m.group(1)) for m in _BASIC.finditer(text)):
        return "a Basic credential"
    return None


def _is_basic_credential(token: str) -> bool:
    """True when ``token`` is base64 of ``user:password``, as Basic authentication sends."""
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def strip_url_credentials(text: str) -> tuple[str, bool]:
    """``text`` without userinfo in its URLs and without token-bearing query parameters,
    and whether anything was removed."""
    out = _URL_CREDENTIALS.sub(lambda m: m.group("scheme"), text)
    out = _QUERY_SECRET.sub(lambda m: m.group(1), out)
    return out, out != text


def _key_is_secret(key: object) -> bool:
    text = str(key)
    return bool(shape_of(text) or strip_url_credentials(text)[1])


def _key_path(path: str, key: object) -> str:
    """``path`` extended by ``key``: ``.name`` for identifiers, ``["..."]`` (JSON-quoted,
    ASCII, at most 64 characters) for others, ``["[redacted]"]`` for a credential."""
    text = str(key)
    if _key_is_secret(text):
        return f'{path}["{REDACTED}"]'
    if _IDENTIFIER.fullmatch(text):
        return f"{path}.{text}"
    shown = json.dumps(text if len(text) <= 64 else text[:61] + "...", ensure_ascii=True)
    return f"{path}[{shown}]"


def scan(doc: Any, path: str = "$", *, vocabulary: frozenset[str] = frozenset()) -> tuple[Any, list[SecretHit]]:
    """A copy of ``doc`` without credentials, and where each was (JSON paths). Keys in
    ``vocabulary`` (at the top level) hold tokens and are kept as they are."""
    if isinstance(doc, str):
        clean, removed = strip_url_credentials(doc)
        what = shape_of(clean)
        if what:
            return _DROP, [SecretHit(path, what, "dropped")]
        return clean, [SecretHit(path, "credentials (userinfo or a token parameter)", "credentials removed")] if removed else []
    hits: list[SecretHit] = []
    if isinstance(doc, dict):
        out: dict[Any, Any] = {}
        for key, value in doc.items():
            where = _key_path(path, key)
            if path == "$" and key in vocabulary:
                out[key] = value
            elif _key_is_secret(key):
                hits.append(SecretHit(where, "a key shaped like a credential", "dropped"))
            elif _key_secret(key, value):
                hits.append(SecretHit(where, f"a credential (key {key!r})", "dropped"))
            else:
                value, inner = scan(value, where)
                hits += inner
                if value is not _DROP:
                    out[key] = value
        return out, hits
    if isinstance(doc, list):
        items = []
        for i, value in enumerate(doc):
            value, inner = scan(value, f"{path}[{i}]")
            hits += inner
            if value is not _DROP:
                items.append(value)
        return items, hits
    return doc, []


class _Dropped:
    """A value removed from its container."""


_DROP = _Dropped()


def find_secrets(doc: Any, file: str = "") -> list[SecretHit]:
    """Where ``doc`` (a JSON document of ``file``) holds credentials."""
    return scan(doc, vocabulary=_vocabulary_of(file))[1]


def scrub(doc: Any, file: str = "") -> tuple[Any, list[SecretHit]]:
    """A copy of ``doc`` without credentials, and where each was."""
    clean, hits = scan(doc, vocabulary=_vocabulary_of(file))
    return (None if clean is _DROP else clean), hits


def _vocabulary_of(file: str) -> frozenset[str]:
    return _TOKEN_SUBTREES if file.rsplit("/", 1)[-1] == "tokenizer_config.json" else frozenset()


def is_scanned(name: str) -> bool:
    """JSON files whose content is settings (scanned), not tokens or a weight index."""
    return name.endswith(".json") and name.rsplit("/", 1)[-1] not in VOCABULARY_FILES and not name.endswith(".index.json")


def redact(text: str) -> str:
    """``text`` with credentials removed: URL userinfo and token query parameters become
    ``***``, token shapes and credentials ``[redacted]``, a private key block whole."""
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    text = _PRIVATE_BLOCK.sub(REDACTED, text)
    for what, pattern in TOKEN_SHAPES.items():
        if what != "a private key":
            text = pattern.sub(REDACTED, text)
    text = _BEARER.sub(REDACTED, text)
    return _BASIC.sub(lambda m: REDACTED if _is_basic_credential(m.group(1)) else m.group(0), text)


def scrub_json_files(files: dict[str, bytes]) -> list[tuple[str, SecretHit]]:
    """Drops credentials from every JSON file in ``files`` (name → bytes, as export is
    about to write them; changed in place) and returns (file, hit) for each. Vocabulary
    files, whose strings are tokens, and weight indexes are left alone. A file that is
    not a JSON object raises ``JsonLimitError`` naming it."""
    from tune2serve.components.checkpoint import bounded_json

    dropped: list[tuple[str, SecretHit]] = []
    for name in sorted(files):
        if not is_scanned(name):
            continue
        doc = bounded_json.load_object(files[name], name)
        clean, hits = scrub(doc, name)
        if hits:
            files[name] = (json.dumps(clean, indent=2, ensure_ascii=False) + "\n").encode()
            dropped += [(name, h) for h in hits]
    return dropped


__all__ = ["REDACTED", "SECRET_KEYS", "SecretHit", "TOKEN_SHAPES", "VOCABULARY_FILES", "find_secrets", "is_scanned",
           "redact", "scan", "scrub", "scrub_json_files", "shape_of", "strip_url_credentials"]
