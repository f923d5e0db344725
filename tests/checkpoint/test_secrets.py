"""Credentials found by key and by value at any depth of a JSON document, dropped (or, in
a URL, only the credentials removed) and reported by JSON path, never by value; and
nothing that real tools write (tests/corpus/, the demo's tiny models) is flagged."""

from __future__ import annotations

import base64
import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.checkpoint.secrets import (
    SECRET_KEYS,
    find_secrets,
    redact,
    scrub,
    shape_of,
    strip_url_credentials,
)

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
ALNUM = string.ascii_letters + string.digits


def _tok(alphabet: str, n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=n, max_size=n + 8)


def _with_digit(s: str) -> str:
    return s[:-1] + "7"


# A secret value: (the value as written, the part that must never be seen again).
SHAPED: list[st.SearchStrategy[tuple[str, str]]] = [
    _tok(ALNUM, 34).map(lambda t: ("hf_" + t, "hf_" + t)),
    _tok(ALNUM + "_-", 40).map(lambda t: ("ya29." + t, "ya29." + t)),
    st.text(ALNUM + "_-", min_size=35, max_size=35).map(lambda t: ("AIza" + t, "AIza" + t)),
    _tok(ALNUM, 36).map(lambda t: ("ghp_" + t, "ghp_" + t)),
    _tok(ALNUM + "_", 30).map(lambda t: ("github_pat_" + t, "github_pat_" + t)),
    _tok(ALNUM + "_-", 40).map(lambda t: ("sk-proj-" + t, "sk-proj-" + t)),
    _tok(ALNUM + "_-", 60).map(lambda t: ("sk-ant-api03-" + t, "sk-ant-api03-" + t)),
    st.tuples(_tok(ALNUM, 20), _tok(ALNUM, 20)).map(lambda p: (f"sk-{p[0][:20]}T3BlbkFJ{p[1][:20]}",
                                                              f"{p[0][:20]}T3BlbkFJ")),
    _tok(ALNUM + "+/", 64).map(lambda t: (f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{t}\n-----END RSA PRIVATE KEY-----",
                                          f"MIIE{t}")),
    _tok(ALNUM + "+/", 64).map(lambda t: (f"-----BEGIN PRIVATE KEY-----\nMIIE{t}", f"MIIE{t}")),  # cut short
    _tok(ALNUM + "._-", 24).map(lambda t: ("Bearer " + _with_digit(t), _with_digit(t))),
    _tok(ALNUM + "._-", 24).map(lambda t: (f"curl -H 'Authorization: Bearer {t}' https://x.example/v1",
                                           f"Bearer {t}")),
    st.tuples(_tok(string.ascii_lowercase, 5), _tok(ALNUM, 12)).map(
        lambda p: ("Basic " + base64.b64encode(f"{p[0]}:{p[1]}".encode()).decode(),
                   base64.b64encode(f"{p[0]}:{p[1]}".encode()).decode())),
    st.tuples(st.text(string.ascii_letters + " ", max_size=20), _tok(ALNUM, 34)).map(
        lambda p: (f"{p[0]} hf_{p[1]} was the token", "hf_" + p[1])),
]
# A URL with credentials: (value, secret part, the URL as it must come out).
_HOST = st.sampled_from(["huggingface.co", "storage.googleapis.com", "github.com", "10.0.0.1:8443"])
_PATH = st.text(string.ascii_lowercase + "/-", max_size=20).map(lambda p: "/" + p.lstrip("/"))
URLS = st.one_of(
    st.tuples(_tok(string.ascii_lowercase, 4), _tok(ALNUM + "!$*", 10), _HOST, _PATH).map(
        lambda p: (f"https://{p[0]}:{p[1]}@{p[2]}{p[3]}", f":{p[1]}@", f"https://{p[2]}{p[3]}")),
    st.tuples(_tok(ALNUM, 34), _HOST, _PATH).map(
        lambda p: (f"https://hf_{p[0]}@{p[1]}{p[2]}", f"hf_{p[0]}", f"https://{p[1]}{p[2]}")),
    st.tuples(_tok(ALNUM, 24), _HOST, _PATH).map(
        lambda p: (f"https://{p[1]}{p[2]}?X-Goog-Signature={p[0]}", p[0], f"https://{p[1]}{p[2]}?X-Goog-Signature=")),
)
_SAFE_TEXT = st.text(string.ascii_letters + string.digits + " .,;!-_()[]{}<>|#'\"\n\t", max_size=30).filter(
    lambda t: shape_of(t) is None)
_KEY = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(
    lambda k: k not in SECRET_KEYS and k.replace("-", "_") not in SECRET_KEYS)
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False), _SAFE_TEXT)


_GONE = object()  # what a dropped value comes out as: absent


@st.composite
def entry(draw: st.DrawFn, where: str, in_list: bool, depth: int) -> tuple[str, Any, Any, list[tuple[str, str, str]]]:
    """(JSON path, value, value as it must come out or _GONE, [(path, secret part, action)])."""
    kinds = ["leaf", "leaf", "shaped", "url", "nested"] + ([] if in_list else ["by-key"])
    kind = draw(st.sampled_from(kinds if depth < 4 else ["leaf", "shaped", "url"]))
    if kind == "nested":
        value, out, inner = draw(document(where, depth + 1))
        return where, value, out, inner
    if kind == "leaf":
        value = draw(_LEAF)
        return where, value, value, []
    if kind == "shaped":
        value, secret = draw(st.one_of(*SHAPED))
        return where, value, _GONE, [(where, secret, "dropped")]
    if kind == "url":
        value, secret, out = draw(URLS)
        return where, value, out, [(where, secret, "credentials removed")]
    # a credential by its key: its value can look like anything
    key = draw(st.sampled_from(["token", "use_auth_token", "Authorization", "hub_token", "api_key", "x-api-key",
                                "client_secret"]))
    where = where.rsplit(".", 1)[0] + "." + key
    secret = "QZ" + draw(_tok(ALNUM, 12)) + "QZ"
    return where, secret, _GONE, [(where, secret, "dropped")]


@st.composite
def document(draw: st.DrawFn, path: str = "$", depth: int = 0) -> tuple[Any, Any, list[tuple[str, str, str]]]:
    """(document, the document as it must come out, [(JSON path, secret part, action)])."""
    as_list = depth > 0 and draw(st.booleans())
    keys = draw(st.lists(_KEY, min_size=0 if depth else 1, max_size=4, unique=True))
    doc: Any = [] if as_list else {}
    want: Any = [] if as_list else {}
    secrets: list[tuple[str, str, str]] = []
    for i, key in enumerate(keys):
        where, value, out, inner = draw(entry(f"{path}[{i}]" if as_list else f"{path}.{key}", as_list, depth))
        if as_list:
            doc.append(value)
            if out is not _GONE:
                want.append(out)
        else:
            key = where.rsplit(".", 1)[1]
            if key in doc:  # a by-key credential drawn onto a key already used: keep the first
                continue
            doc[key] = value
            if out is not _GONE:
                want[key] = out
        secrets += inner
    return doc, want, secrets


@settings(max_examples=300, deadline=None)
@given(document())
def test_secrets_at_any_depth_are_dropped_and_reported_by_path(case: tuple[Any, Any, list[tuple[str, str, str]]]) -> None:
    doc, want, secrets = case
    clean, hits = scrub(doc, "config.json")
    assert clean == want
    assert sorted((h.path, h.action) for h in hits) == sorted((p, a) for p, _, a in secrets)
    text = json.dumps(clean) + "".join(h.describe("config.json") for h in hits)
    for _, secret, _ in secrets:
        assert secret not in text
    assert find_secrets(doc, "config.json") == hits
    # the same shapes never survive redact() in text (messages, logs); by-key ones have no shape
    for _, secret, _ in secrets:
        if not (secret.startswith("QZ") and secret.endswith("QZ")):
            assert secret not in redact(json.dumps(doc, ensure_ascii=False))


@settings(max_examples=100, deadline=None)
@given(st.one_of(*SHAPED), st.sampled_from([_tok(ALNUM, 34), st.just("x y"), st.just("a\nb")]).flatmap(lambda s: s))
def test_a_token_shaped_key_is_dropped_and_never_shown(shaped: tuple[str, str], value: str) -> None:
    doc = {"outer": {shaped[0]: value, "keep": 1}}
    clean, hits = scrub(doc)
    assert clean == {"outer": {"keep": 1}}
    assert [h.path for h in hits] == ['$.outer["[redacted]"]'] and shaped[1] not in hits[0].describe("f.json")


def test_paths_quote_odd_keys_and_the_tokenizer_vocabulary_is_kept() -> None:
    token = "hf_" + "Ab1" * 12
    doc = {"a b": {"c\n\u202e": [0, {"url": f"https://u:{token}@h/x"}]}}
    _, hits = scrub(doc)
    assert [h.path for h in hits] == ['$["a b"]["c\\n\\u202e"][1].url']
    tokenizer_config = {"added_tokens_decoder": {"5": {"content": token}}, "chat_template": "{{ bos }}"}
    assert scrub(tokenizer_config, "tokenizer_config.json") == (tokenizer_config, [])
    assert [h.path for h in scrub(tokenizer_config, "config.json")[1]] == ['$.added_tokens_decoder["5"].content']


# ---- false positives: what real tools write, and near misses --------------------------------

def _strings(doc: Any) -> list[str]:
    if isinstance(doc, str):
        return [doc]
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in [str(k), *_strings(v)]]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return []


CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".json", ".jinja"))


def test_the_corpus_is_there() -> None:
    assert len(CORPUS_FILES) > 100 and any(p.name == "tokenizer.json" for p in CORPUS_FILES)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_nothing_real_tools_write_is_flagged(path: Path) -> None:
    """Every string of every corpus file — vocabularies, merges, chat templates included,
    although export never scrubs vocabulary files — trips no shape rule."""
    text = path.read_text(encoding="utf-8")
    strings = _strings(json.loads(text)) if path.suffix == ".json" else [text]
    flagged = [s[:80] for s in strings if shape_of(s) or strip_url_credentials(s)[1]]
    assert flagged == []
    if path.suffix == ".json":
        assert find_secrets(json.loads(text), path.name) == []
    assert redact(text) == text


def test_the_demo_models_files_are_not_flagged(tiny_llama: Path, tiny_qwen_sharded: Path) -> None:
    for folder in (tiny_llama, tiny_qwen_sharded):
        for path in folder.iterdir():
            if path.suffix in (".json", ".jinja"):
                text = path.read_text(encoding="utf-8")
                assert [s for s in (_strings(json.loads(text)) if path.suffix == ".json" else [text])
                        if shape_of(s) or strip_url_credentials(s)[1]] == [], path.name


@pytest.mark.parametrize("text", [
    "sk-learn", "sk-" + "a1B2" * 12, "sk-" + "0123456789abcdef" * 2,  # ambiguous sk- forms: not flagged
    base64.b64encode(bytes(range(256)) * 2).decode(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "Bearer of bad news", "Bearer", "Bearer tokens are described in RFC 6750", "Basic information",
    "Basic English", "Basic QUJDREVGR0g=",  # base64 of "ABCDEFGH": no user:password
    "The Authorization header carries a token.", "Authorization: required",
    "https://huggingface.co/meta-llama/Llama-2-7b-hf", "git@github.com:org/repo.git", "user@example.com",
    "mailto:someone@example.com", "https://example.com/@user/post", "hf_hub_download", "hf_" + "a" * 10,
    "ya29", "AIza" + "x" * 10, "ghp_short", "-----BEGIN CERTIFICATE-----", "{{ '<|im_start|>' + message['role'] }}",
    "tokenizer_class", "PreTrainedTokenizerFast", "<|reserved_special_token_250|>",
])
def test_near_misses_are_not_flagged(text: str) -> None:
    assert shape_of(text) is None and not strip_url_credentials(text)[1]
    assert scrub({"v": text}) == ({"v": text}, [])


def test_keys_are_credentials_only_with_a_value() -> None:
    doc = {"pad_token": "<pad>", "bos_token_id": 1, "token": None, "use_auth_token": False,
           "max_tokens": 154, "tokenizer": {"token": ""}, "authorization": {}}
    assert scrub(doc) == (doc, [])
