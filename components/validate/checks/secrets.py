"""Credentials left in the checkpoint's JSON files, by key (``token``, ``use_auth_token``,
``Authorization``) or by value (URL userinfo, ``Bearer …``, ``hf_…``/``ya29.…``/``AIza…``
token shapes, private-key blocks; ``checkpoint/secrets.py``), at any depth of every
settings JSON file in the folder (training state is an error of its own, and is not
read): a warning each, naming file and JSON path, never the
value. Export drops them; a folder uploaded as it is would serve them to anyone who can
read the bucket."""

from __future__ import annotations

from tune2serve.components.checkpoint.secrets import find_secrets, is_scanned
from tune2serve.components.checkpoint.training_state import is_training_state
from tune2serve.components.validate.context import Checkpoint, JsonFile, read_json_file
from tune2serve.components.validate.findings import Finding, warning


def check_secrets(ckpt: Checkpoint) -> list[Finding]:
    known = {ckpt.config.name: ckpt.config, ckpt.tokenizer_config.name: ckpt.tokenizer_config}
    docs: list[JsonFile] = [known.get(n) or read_json_file(ckpt.folder, ckpt.sizes, n)
                            for n in sorted(ckpt.sizes) if is_scanned(n) and not is_training_state(n)]
    return [
        warning("secret-in-config", f"{hit.describe(jf.name)}: remove it (export drops it) and revoke the token if "
                                    "the folder was shared", jf.name)
        for jf in docs if jf.doc is not None for hit in find_secrets(jf.doc, jf.name)
    ]
