"""Which files are there: DESIGN.md §1's required files, nothing that leaves the
folder, no empty files, one weight format, no Python code, no training state and no
pickle beside the weights."""

from __future__ import annotations

from tune2serve.components.checkpoint.index import BIN_INDEX, SAFETENSORS_INDEX
from tune2serve.components.checkpoint.training_state import WHY, stray_files
from tune2serve.components.validate.context import (
    CONFIG,
    TOKENIZER_CONFIG,
    TOKENIZER_JSON,
    TOKENIZER_MODEL,
    Checkpoint,
)
from tune2serve.components.validate.findings import Finding, error, warning

_CHECKED_EMPTY_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".jinja")


def check_files(ckpt: Checkpoint) -> list[Finding]:
    found: list[Finding] = []
    if not ckpt.sizes and not ckpt.symlinks_outside and not ckpt.not_regular:
        return [error("empty-folder", f"{ckpt.folder.uri} holds no files; point SOURCE at the exported checkpoint folder")]
    for name in ckpt.symlinks_outside:
        found.append(error("symlink-outside", f"{name} is a symlink that leaves the checkpoint folder; "
                                              "copy the real file into the folder", name))
    for name, kind in sorted(ckpt.not_regular.items()):
        found.append(error("not-regular-file", f"{name} is {kind}, not a regular file; it is never read. "
                                               "Replace it with the real file", name))
    if not ckpt.has(CONFIG):
        found.append(error("missing-config", f"{CONFIG} is missing; deploy needs the model config next to the weights", CONFIG))
    found += _weights(ckpt)
    found += _tokenizer_files(ckpt)
    for name, size in sorted(ckpt.sizes.items()):
        base = name.rsplit("/", 1)[-1]
        if size == 0 and base.endswith(_CHECKED_EMPTY_SUFFIXES):
            found.append(error("empty-file", f"{name} is empty (0 bytes); the upload or export did not finish", name))
        if base.endswith(".py"):
            found.append(warning("python-files", f"{name} is Python code; the server never runs it (no remote code) "
                                                 "so a model that needs it will not load", name))
    found += _stray(ckpt)
    return found


def _stray(ckpt: Checkpoint) -> list[Finding]:
    """Training state and pickles that are not the weights (``checkpoint/training_state.py``,
    the definition deploy refuses by): errors, so a folder that validates is deployable.
    The model's own ``.bin`` weights are scanned by the pickles check instead."""
    weights = set(ckpt.weights.bins) | set(ckpt.weights.safetensors)
    return [error(s.code, f"{s.name} is {s.what}, not part of a served model ({WHY[s.code]}); it was not "
                          "loaded. 'tune2serve export SOURCE DEST' makes a clean folder without it", s.name)
            for s in stray_files(ckpt.folder, ckpt.sizes, weights)]


def _weights(ckpt: Checkpoint) -> list[Finding]:
    w = ckpt.weights
    if not w.safetensors and not w.bins:
        return [error("missing-weights", "no weights: expected model.safetensors (or model-*.safetensors shards with "
                                         f"{SAFETENSORS_INDEX}) or pytorch_model.bin at the top of the folder")]
    found: list[Finding] = []
    if w.safetensors and w.bins:  # vLLM loads the safetensors and never reads the .bin (tests/vllm/test_mutations.py)
        found.append(warning("mixed-weight-formats",
                             f"both safetensors ({len(w.safetensors)} files) and .bin weights ({', '.join(w.bins)}) are "
                             "present; the server loads the safetensors and ignores the .bin (it is uploaded for "
                             "nothing, and its weights are not the ones served). Keep only the safetensors files",
                             w.bins[0]))
    if len(w.safetensors) > 1 and not w.safetensors_index:
        found.append(error("missing-index", f"{len(w.safetensors)} safetensors shards but no {SAFETENSORS_INDEX}; "
                                            "the server cannot tell which shard holds which tensor", SAFETENSORS_INDEX))
    if len(w.bins) > 1 and not w.bin_index:
        found.append(error("missing-index", f"{len(w.bins)} .bin shards but no {BIN_INDEX}", BIN_INDEX))
    return found


def _tokenizer_files(ckpt: Checkpoint) -> list[Finding]:
    """Policy: tokenizer_config.json and (tokenizer.json or tokenizer.model) are both
    required: the first carries the chat template and special tokens, the second the
    vocabulary. DESIGN.md §1 lists all three; either vocabulary file is enough."""
    found: list[Finding] = []
    if not ckpt.has(TOKENIZER_CONFIG):
        found.append(error("missing-tokenizer", f"{TOKENIZER_CONFIG} is missing; it carries the chat template and "
                                                "special tokens. Save the tokenizer with the model", TOKENIZER_CONFIG))
    if not ckpt.has(TOKENIZER_JSON) and not ckpt.has(TOKENIZER_MODEL):
        found.append(error("missing-tokenizer", f"neither {TOKENIZER_JSON} nor {TOKENIZER_MODEL} is present; "
                                                "the server needs the tokenizer's vocabulary", TOKENIZER_JSON))
    return found
