"""The token the chat template ends a turn with is one the server stops at.

vLLM stops a generation at the tokenizer's ``eos_token`` and at the ``eos_token_id``s of
``generation_config.json`` (config.json's when there is none). The model learned to end
its turn with whatever the chat template puts after an assistant message (``<|im_end|>``,
``<end_of_turn>``, ``<|eot_id|>``); when that token is none of the stop tokens, every
chat answer runs on to ``max_tokens`` — the endpoint "works" and never stops (shown with
vLLM itself by ``tests/vllm/test_mutations.py``).

The template is rendered the way transformers renders it (jinja2's immutable sandbox)
for a user message and a final assistant message; the first special token of the
tokenizer right after the assistant's text is the end of turn. A template that does not
render or ends a turn with no special token is not judged.
"""

from __future__ import annotations

import json
from typing import Any

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.validate.context import CONFIG, TOKENIZER_CONFIG, Checkpoint
from tune2serve.components.validate.findings import Finding, error

GENERATION_CONFIG = "generation_config.json"
_MARK = "\u2063T2S-ASSISTANT-TEXT\u2063"
MAX_TEMPLATE_CHARS = 1_000_000


def check_stop_tokens(ckpt: Checkpoint) -> list[Finding]:
    tok = ckpt.tokenizer
    template = _template(ckpt)
    if tok is None or not template:
        return []
    added = {str(t.content): int(i) for i, t in tok.get_added_tokens_decoder().items()}
    end = _end_of_turn(template, ckpt.tokenizer_config.doc, added)
    if end is None:
        return []
    stops, sources = _stop_ids(ckpt, tok)
    if added[end] in stops:
        return []
    said = "; ".join(sources) or "none is set"
    return [error("stop-token-mismatch", f"the chat template ends an assistant turn with {end} (id {added[end]}), but "
                                         f"the server stops only at {sorted(stops) or 'nothing'} ({said}): chat "
                                         f"answers would never stop. Set eos_token_id in {GENERATION_CONFIG} to "
                                         f"include {added[end]} (or the tokenizer's eos_token to {end})",
                  GENERATION_CONFIG if ckpt.has(GENERATION_CONFIG) else TOKENIZER_CONFIG)]


def _template(ckpt: Checkpoint) -> str | None:
    doc = ckpt.tokenizer_config.doc
    value = doc.get("chat_template") if isinstance(doc, dict) else None
    if isinstance(value, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    if not value and ckpt.has("chat_template.jinja") and ckpt.sizes["chat_template.jinja"] <= MAX_TEMPLATE_CHARS:
        value = ckpt.folder.read_bytes("chat_template.jinja").decode("utf-8", "replace")
    if not value and ckpt.has("chat_template.json") and ckpt.sizes["chat_template.json"] <= MAX_TEMPLATE_CHARS:
        try:
            loaded = bounded_json.loads(ckpt.folder.read_bytes("chat_template.json"), "chat_template.json")
        except bounded_json.JsonLimitError:
            return None
        value = loaded.get("chat_template") if isinstance(loaded, dict) else None
    return value if isinstance(value, str) and len(value) <= MAX_TEMPLATE_CHARS else None


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _render(template: str, tok_config: Any) -> str | None:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: "01 Jan 2026")
    cfg = tok_config if isinstance(tok_config, dict) else {}
    special = {k: _token_text(cfg.get(k)) or "" for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    messages = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": _MARK}]
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=False, tools=None,
                                                **special)
    except Exception:  # noqa: BLE001 - a template that needs what we do not pass is not judged
        return None


def _end_of_turn(template: str, tok_config: Any, added: dict[str, int]) -> str | None:
    """The special token right after the assistant's text (whitespace between allowed)."""
    rendered = _render(template, tok_config)
    if rendered is None or _MARK not in rendered:
        return None
    after = rendered.split(_MARK, 1)[1].lstrip()
    starts = [t for t in added if t and after.startswith(t)]
    return max(starts, key=len) if starts else None


def _ids(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _stop_ids(ckpt: Checkpoint, tok: Any) -> tuple[set[int], list[str]]:
    """The ids vLLM stops at, and where each comes from (for the message)."""
    stops: set[int] = set()
    sources: list[str] = []
    eos = _token_text((ckpt.tokenizer_config.doc or {}).get("eos_token")) \
        if isinstance(ckpt.tokenizer_config.doc, dict) else None
    eos_id = tok.token_to_id(eos) if eos else None
    if eos_id is not None:
        stops.add(int(eos_id))
        sources.append(f"{TOKENIZER_CONFIG} eos_token {eos}")
    gen = _generation_config(ckpt)
    for name, doc in ((GENERATION_CONFIG, gen), (CONFIG, ckpt.config_doc), (f"{CONFIG} text_config",
                                                                            (ckpt.config_doc or {}).get("text_config"))):
        ids = _ids(doc.get("eos_token_id")) if isinstance(doc, dict) else []
        if ids:
            stops.update(ids)
            sources.append(f"{name} eos_token_id {ids if len(ids) > 1 else ids[0]}")
    return stops, sources


def _generation_config(ckpt: Checkpoint) -> dict[str, Any] | None:
    if not ckpt.has(GENERATION_CONFIG) or ckpt.sizes[GENERATION_CONFIG] > bounded_json.max_bytes_for(GENERATION_CONFIG):
        return None
    try:
        doc = bounded_json.loads(ckpt.folder.read_bytes(GENERATION_CONFIG), GENERATION_CONFIG)
    except bounded_json.JsonLimitError:
        return None
    return doc if isinstance(doc, dict) else None
