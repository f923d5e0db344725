"""Credentials left in the checkpoint's JSON files (``token``, ``use_auth_token``, a
``hf_...`` value): a warning each, naming file and key. Export drops them; a folder
uploaded as it is would serve them to anyone who can read the bucket."""

from __future__ import annotations

from tune2serve.components.checkpoint.secrets import find_secrets
from tune2serve.components.validate.context import Checkpoint, read_json_file
from tune2serve.components.validate.findings import Finding, warning

FILES = ("generation_config.json", "preprocessor_config.json", "processor_config.json", "chat_template.json")


def check_secrets(ckpt: Checkpoint) -> list[Finding]:
    docs = [ckpt.config, ckpt.tokenizer_config] + [read_json_file(ckpt.folder, ckpt.sizes, n) for n in FILES if n in ckpt.sizes]
    return [
        warning("secret-in-config", f"{jf.name}: key {key!r} holds a credential; remove it (export drops it) "
                                    "and revoke the token if the folder was shared", jf.name)
        for jf in docs if isinstance(jf.doc, dict) for key in find_secrets(jf.doc)
    ]
