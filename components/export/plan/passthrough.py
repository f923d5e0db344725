"""Export's pass-through: a source that is already a deployable folder on GCS is
deployed from where it is, not copied.

Why pass through rather than copy: the folder is what a copy would produce (safetensors
weights, config, tokenizer, nothing else), so a copy costs its full size in transfer
and storage (tens to hundreds of GB, minutes to an hour) and buys nothing; validate
still checks it headers-only before anything is deployed, and deploy identifies it by
its object listing (or its manifest, for an earlier export). So in the pipeline
(``tune2serve run``: the export steps call ``export_checkpoint(..., pass_through=True)``,
whose first lines ask ``passed_through``) such a source passes through: ``export_uri`` is the source itself, nothing is written at
``export_dest``, and the step's output says so (``passthrough: true`` with the reason in
``notes``; the Model artifact's metadata too). ``tune2serve export SOURCE DEST`` always
copies: its contract is that DEST holds a complete export.

A source passes through only when every one of these holds (else it is copied, and the
log says which did not):
1. source and destination are both ``gs://`` (Vertex reads custom weights from GCS; a
   local destination asks for a local copy, a local source must be uploaded anyway);
2. the folder itself holds full weights: no adapter to merge, no training run tree
   (``checkpoint-N/``, subfolders), no training state;
3. every file is one a deployable folder holds: ``*.safetensors`` (no ``.bin`` pickles,
   which export converts), the index, config, generation config, tokenizer and chat
   template, ``manifest.json``, and documentation (README, LICENSE, NOTICE);
4. the config carries no training marks that export would clean (``use_cache: false``,
   ``_name_or_path``, gradient-checkpointing keys), and no JSON file carries a
   credential that export would drop (``checkpoint/secrets.py``);
5. nothing asks for a rewrite: ``--dtype`` is ``auto`` or the weights' own, and every
   shard fits ``--max-shard-size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from tune2serve.components.checkpoint import bounded_json, secrets
from tune2serve.components.checkpoint.identity import folder_identity
from tune2serve.components.checkpoint.manifest import MANIFEST_NAME
from tune2serve.components.checkpoint.training_state import is_training_state
from tune2serve.components.errors import CheckpointError
from tune2serve.components.checkpoint.storage import GCS_SCHEME, Folder, GcsFolder, ObjectInfo, open_folder
from tune2serve.components.export.plan.config_clean import TOKENIZER_FILES, TRAINING_ONLY_KEYS, config_dtype
from tune2serve.components.export.source.layout import CheckpointChoice, Selection, discover
from tune2serve.components.export.publish.writer import INDEX_NAME
from tune2serve.components.logs import get_logger, log_event

logger = get_logger("export.passthrough")

_SMALL = frozenset({"config.json", "generation_config.json", INDEX_NAME, MANIFEST_NAME, *TOKENIZER_FILES})
_DOCS = frozenset({"README.md", "LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE", "NOTICE.txt", "USE_POLICY.md",
                   ".gitattributes"})


@dataclass(frozen=True)
class Decision:
    passthrough: bool
    reason: str  # why it passes through, or why it is copied


def _copy(reason: str) -> Decision:
    return Decision(False, f"copying: {reason}")


def decide(source: Folder, dest: Folder, selection: Selection, listing: list[ObjectInfo], *, dtype: str,
           max_shard_bytes: int) -> Decision:
    """Whether ``source`` (already discovered as ``selection``) is deployed as it is."""
    if not (isinstance(source, GcsFolder) and isinstance(dest, GcsFolder)):
        return _copy("pass-through needs a gs:// source and a gs:// destination")
    if selection.is_adapter or selection.subdir:
        return _copy(f"{source.uri} is a {selection.source_kind}, not a folder of full weights")
    for o in listing:
        name = PurePosixPath(o.name)
        if len(name.parts) > 1:
            return _copy(f"{source.join(o.name)} is in a subfolder (a deployable folder is flat)")
        if o.name in _SMALL or o.name in _DOCS:
            continue
        if o.name.endswith(".safetensors") and not o.name.startswith("adapter_model"):
            if o.size > max_shard_bytes:
                return _copy(f"{source.join(o.name)} is {o.size} bytes, larger than --max-shard-size")
            continue
        state = ": it is training state" if is_training_state(o.name) else ""
        return _copy(f"{source.join(o.name)} is not a file of a deployable folder{state} (export leaves it out"
                     f"{' and converts .bin weights to safetensors' if o.name.endswith('.bin') else ''})")
    try:
        config = bounded_json.read_object(source, "config.json")
    except CheckpointError as e:  # export proper then refuses it, naming the problem
        return _copy(str(e))
    marks = sorted(k for k in TRAINING_ONLY_KEYS if k in config) + (["use_cache: false"]
                                                                     if config.get("use_cache") is False else [])
    if marks:
        return _copy(f"{source.join('config.json')} carries training marks export cleans ({', '.join(marks)})")
    own = config_dtype(config)
    if dtype != "auto" and dtype != own:
        return _copy(f"--dtype {dtype} asks to convert weights stored as {own}")
    carried = _credentials(source, listing, config)
    if carried:
        return _copy(f"{carried} (export drops it from the copy)")
    return Decision(True, f"{source.uri} is already a deployable folder (flat, safetensors, no adapter or "
                          "training state): deployed from where it is, nothing copied")


def _credentials(source: Folder, listing: list[ObjectInfo], config: dict[str, Any]) -> str | None:
    """Where the folder's settings JSON files carry a credential (``checkpoint/secrets.py``:
    by key or by value), said by file and JSON path; None when they carry none. A folder
    deployed as it is would serve them; the copy export makes drops them."""
    for o in sorted(listing, key=lambda o: o.name):
        if not secrets.is_scanned(o.name) or o.name == MANIFEST_NAME:
            continue
        try:
            doc = config if o.name == "config.json" else bounded_json.read_json(source, o.name)
        except CheckpointError as e:
            return str(e)
        hits = secrets.find_secrets(doc, o.name)
        if hits:
            return f"{source.join(o.name)}: {hits[0].path} holds {hits[0].what}"
    return None


def described(folder: Folder, selection: Selection, decision: Decision) -> dict[str, Any]:
    """``ExportResult`` fields for a folder passed through: ``dest`` is the folder itself,
    its identity digest (the manifest's, or its listing's) the one deploy will label with.
    sha256 is known only from a manifest (nothing is read to compute it)."""
    identity = folder_identity(folder)
    sha = {e.name: e.sha256 for e in identity.manifest.files} if identity.manifest else {}
    objects = folder.list()
    config = bounded_json.read_object(folder, "config.json")
    return {
        "ok": True, "dest": folder.uri, "noop": False, "passthrough": True,
        "files": [{"name": o.name, "size": o.size, "sha256": sha.get(o.name), **({"crc32c": o.crc32c} if o.crc32c else {})}
                  for o in objects],
        "source": folder.uri, "source_kind": selection.source_kind, "explanation": selection.explanation,
        "parameter_count": 0, "bytes": sum(o.size for o in objects), "dtype": config_dtype(config) or "",
        "checkpoint": "final", "base_model": None, "merge": None, "manifest_digest": identity.digest,
        "notes": [decision.reason],
    }


def passed_through(source: str, dest: str, *, checkpoint: str, dtype: str, max_shard_bytes: int,
                   folder: Folder | None = None) -> dict[str, Any] | None:
    """``ExportResult`` fields when ``source`` is deployed as it is, else None (export
    copies). Only gs:// to gs:// is considered; the decision is logged either way.
    ``folder``: the source already opened and listed (``Folder.pinned``), so the
    export lists it once in all."""
    if not (source.startswith(GCS_SCHEME) and dest.startswith(GCS_SCHEME)):
        return None
    folder = folder or open_folder(source)
    listing = folder.list()
    selection = discover(folder, CheckpointChoice.parse(checkpoint), listing)
    decision = decide(folder, open_folder(dest), selection, listing, dtype=dtype, max_shard_bytes=max_shard_bytes)
    log_event(logger, "export.passthrough" if decision.passthrough else "export.copy", decision.reason,
              source=folder.uri, dest=dest, passthrough=decision.passthrough)
    return described(folder, selection, decision) if decision.passthrough else None


__all__ = ["Decision", "decide", "described", "passed_through"]
