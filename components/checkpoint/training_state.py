"""What a served model never holds: training state, and pickles that are not its weights.

The one definition every step uses:
- export leaves these files out (``export/source/layout.py`` picks the weights, and
  ``export/plan/passthrough.py`` copies a folder holding one instead of passing it
  through, so the copy leaves them behind);
- validate reports each as an error (``training-state``, ``pickle-outside-weights``),
  so a folder that validates is one deploy accepts;
- deploy refuses a folder holding one before any Vertex call (``deploy/preflight.py``).

Why refuse rather than ignore: Vertex AI copies the whole folder to every serving
replica, and the servers behind it unpickle what they find under weight-like names
(vLLM falls back to ``*.pt``; transformers reads ``*.bin``). A pickle is code: the
model's own ``.bin`` weights are scanned global by global (``pickle_scan.py``), any
other pickle is code nobody checked, so it is refused by name or by its first bytes,
never opened as a pickle. Training state (optimizer, scheduler, RNG, trainer state,
training arguments) serves nothing, costs upload time and storage on every replica,
and tells of the training run.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from tune2serve.components.checkpoint.storage import Folder

# What HF Trainer, DeepSpeed and accelerate write beside the weights: optimizer.pt,
# scheduler.pt, rng_state.pth / rng_state_N.pth, trainer_state.json, training_args.bin.
TRAINING_STATE_PREFIXES = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args")
# Names that loaders unpickle (torch.load, pickle.load): .bin only ever holds weights
# when it is one of the weight files; the others never do in a deployable folder.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Formats whose reader parses them as what they are (safetensors headers are checked by
# validate), so a pickle under that name is never unpickled: not sniffed.
_NOT_SNIFFED = (".safetensors",)
SNIFF_BYTES = 512

TRAINING_STATE = "training-state"
PICKLE_OUTSIDE_WEIGHTS = "pickle-outside-weights"
# Why each is refused, in words (validate's findings and deploy's refusal say it).
WHY = {
    TRAINING_STATE: "it serves nothing, and Vertex AI copies the whole folder to every replica",
    PICKLE_OUTSIDE_WEIGHTS: "a pickle is code, and the servers behind Vertex AI unpickle what they find under "
                            "weight-like names; only the model's own weight files are scanned",
}


@dataclass(frozen=True)
class StrayFile:
    """A file that is not part of a served model: ``code`` is validate's finding code,
    ``what`` says in words what it is."""

    name: str
    code: str
    what: str


def is_training_state(name: str) -> bool:
    """True for a training-state file at any depth (judged by its base name)."""
    return PurePosixPath(name).name.startswith(TRAINING_STATE_PREFIXES)


def has_pickle_name(name: str) -> bool:
    """True for a name that loaders open with ``torch.load`` or ``pickle.load``."""
    return PurePosixPath(name).name.lower().endswith(PICKLE_SUFFIXES)


def looks_like_pickle(head: bytes) -> bool:
    """True when a file's first bytes are a pickle's: the PROTO opcode of protocol 2 to 5
    (what ``pickle.dump`` and torch's legacy format write), or a zip archive whose first
    member is ``<archive>/data.pkl`` (what ``torch.save`` writes). A protocol 0/1 pickle
    has no magic; under a name that no loader unpickles it is never loaded."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head[:4] == b"PK\x03\x04" and len(head) >= 30:
        length = int.from_bytes(head[26:28], "little")
        first = head[30:30 + length]
        return first == b"data.pkl" or first.endswith(b"/data.pkl")
    return False


def stray_files(folder: Folder, sizes: Mapping[str, int], weights: Collection[str]) -> list[StrayFile]:
    """The files of ``folder`` (``sizes``: name → bytes, regular files only) that a served
    model never holds, in name order. ``weights`` are the model's own weight files
    (``index.find_weight_files(...).bins`` and safetensors), which are checked elsewhere.
    Reads at most ``SNIFF_BYTES`` of each file whose name says nothing (never a pickle
    opened as one)."""
    found: list[StrayFile] = []
    for name in sorted(sizes):
        if name in weights:
            continue
        suffix = PurePosixPath(name).suffix or "no suffix"
        if is_training_state(name):
            found.append(StrayFile(name, TRAINING_STATE, "training state (optimizer, scheduler, RNG or trainer "
                                                         "state, training arguments)"))
        elif has_pickle_name(name):
            found.append(StrayFile(name, PICKLE_OUTSIDE_WEIGHTS, f"a pickle ({suffix}) that is not one of the "
                                                                 "model's weight files"))
        elif sizes[name] and not name.endswith(_NOT_SNIFFED) and looks_like_pickle(
                folder.read_range(name, 0, min(SNIFF_BYTES, sizes[name]))):
            found.append(StrayFile(name, PICKLE_OUTSIDE_WEIGHTS, "a pickle by its first bytes, not one of the "
                                                                 "model's weight files"))
    return found


__all__ = ["PICKLE_OUTSIDE_WEIGHTS", "PICKLE_SUFFIXES", "StrayFile", "TRAINING_STATE", "TRAINING_STATE_PREFIXES", "WHY",
           "has_pickle_name", "is_training_state", "looks_like_pickle", "stray_files"]
