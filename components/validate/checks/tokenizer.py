"""The tokenizer loads, fits the vocabulary, and has a chat template.

tokenizer.json is loaded with the ``tokenizers`` library (Rust, fast to import; the file
is read from the folder, a few MB at most, never the weights). Its vocabulary, added
tokens included, must fit config.json's vocab_size: a token id past the embedding makes
the server fail or answer garbage (a vocabulary *smaller* than vocab_size is normal:
embeddings are padded). A chat template — tokenizer_config.json ``chat_template``,
``chat_template.jinja`` or ``chat_template.json`` — is required: the chat/completions
route that Vertex AI's custom-weights endpoints expose needs it, so it is an error.
"""

from __future__ import annotations

from tune2serve.components.checkpoint.bounded_json import max_bytes_for
from tune2serve.components.validate.context import (
    CONFIG,
    TOKENIZER_CONFIG,
    TOKENIZER_JSON,
    TOKENIZER_MODEL,
    Checkpoint,
)
from tune2serve.components.validate.findings import Finding, error, info

CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def check_tokenizer(ckpt: Checkpoint) -> list[Finding]:
    found = _chat_template(ckpt)
    vocab_size = ckpt.text_config.get("vocab_size")
    vocab_size = vocab_size if isinstance(vocab_size, int) and not isinstance(vocab_size, bool) else None
    if ckpt.sizes.get(TOKENIZER_JSON):
        tok_size, detail = _load_tokenizer_json(ckpt)
        if tok_size is None:
            found.append(error("tokenizer-unreadable", f"{TOKENIZER_JSON} does not load with the tokenizers "
                                                       f"library: {detail}", TOKENIZER_JSON))
        else:
            ckpt.summary["tokenizer_vocab"] = tok_size
            if vocab_size is not None and tok_size > vocab_size:
                found.append(error("vocab-mismatch", f"{TOKENIZER_JSON} has {tok_size} tokens (added tokens included) "
                                                     f"but {CONFIG} vocab_size is {vocab_size}: ids past the "
                                                     "embedding would crash the server. Resize the embeddings and "
                                                     "set vocab_size", TOKENIZER_JSON))
    elif ckpt.sizes.get(TOKENIZER_MODEL):
        found.append(info("tokenizer-not-loaded", f"only {TOKENIZER_MODEL} (sentencepiece) is present; its vocabulary "
                                                  "was not compared with vocab_size", TOKENIZER_MODEL))
    found += _added_tokens(ckpt, vocab_size)
    return found


def _chat_template(ckpt: Checkpoint) -> list[Finding]:
    doc = ckpt.tokenizer_config.doc
    template = doc.get("chat_template") if isinstance(doc, dict) else None
    if template or any(ckpt.sizes.get(n) for n in CHAT_TEMPLATE_FILES):
        return []
    if not ckpt.has(TOKENIZER_CONFIG):
        return []  # missing-tokenizer says it already
    return [error("no-chat-template", "no chat template (tokenizer_config.json has no chat_template, no chat_template.jinja or chat_template.json); "
                                      "the endpoint's chat/completions route needs one. Save the tokenizer with its "
                                      "chat template", TOKENIZER_CONFIG)]


def _load_tokenizer_json(ckpt: Checkpoint) -> tuple[int | None, str]:
    if ckpt.sizes[TOKENIZER_JSON] > max_bytes_for(TOKENIZER_JSON):
        return None, f"{ckpt.sizes[TOKENIZER_JSON]} bytes is too large for a tokenizer"
    from tokenizers import Tokenizer

    raw = ckpt.folder.read_bytes(TOKENIZER_JSON)  # storage errors propagate: the source is unreadable
    try:
        tok = Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as e:  # the Rust library raises plain Exception subclasses on bad input
        return None, str(e).splitlines()[0][:300] if str(e) else type(e).__name__
    ckpt.tokenizer = tok  # the stop-token check reads the same tokenizer
    return int(tok.get_vocab_size(with_added_tokens=True)), ""


def _added_tokens(ckpt: Checkpoint, vocab_size: int | None) -> list[Finding]:
    """tokenizer_config.json's added_tokens_decoder ids must fit the vocabulary too."""
    doc = ckpt.tokenizer_config.doc
    added = doc.get("added_tokens_decoder") if isinstance(doc, dict) else None
    if vocab_size is None or not isinstance(added, dict):
        return []
    beyond = sorted(int(k) for k in added if str(k).isdigit() and int(k) >= vocab_size)
    if not beyond:
        return []
    return [error("vocab-mismatch", f"{TOKENIZER_CONFIG} adds tokens with ids {beyond[:5]} at or past {CONFIG} "
                                    f"vocab_size {vocab_size}", TOKENIZER_CONFIG)]
