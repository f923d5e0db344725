"""Finds the checkpoint to export inside whatever a tuning job wrote.

Tuning outputs come in several layouts and the export looks instead of assuming one:

* an HF Trainer output dir: ``checkpoint-N/`` folders (plus, after ``trainer.save_model``,
  the final model at the top level) and ``trainer_state.json`` naming the best one;
* a Vertex AI tuning output tree: the checkpoint sits deeper, e.g.
  ``postprocess/node-0/checkpoints/final`` (managed tuning) or
  ``adapter/node-0/checkpoint-final`` (Model Garden notebooks);
* a checkpoint folder itself: full weights (safetensors, sharded or not, or ``.bin``)
  or a PEFT LoRA adapter (``adapter_config.json`` + ``adapter_model.*``).

Everything here works on a listing (names and sizes), so it costs one list call on GCS,
and every decision comes with a sentence saying why, for the log and ``--json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.checkpoint.storage import Folder, ObjectInfo
from tune2serve.components.checkpoint.training_state import is_training_state
from tune2serve.components.errors import CheckpointError, UsageError
from tune2serve.components.export.source.producers import unconsolidated

_TRAINER_CKPT = re.compile(r"^checkpoint-(\d+)$")
_STEP_NAME = re.compile(r"^(?:checkpoint|step|ckpt|epoch)?[-_]?(\d+)$")  # torchtune: epoch_N/, by number
_FINAL_NAMES = {"final", "checkpoint-final", "final_checkpoint", "final-checkpoint"}
_NODE = re.compile(r"(^|/)node-\d+(/|$)")

SourceKind = str  # "hf-trainer" | "vertex-tuning" | "nested-checkpoint" | "full-checkpoint" | "peft-adapter"


@dataclass(frozen=True)
class CheckpointChoice:
    """``--checkpoint``: final | best | latest | a step number."""

    mode: str
    step: int | None = None

    @classmethod
    def parse(cls, text: str) -> CheckpointChoice:
        value = (text or "final").strip().lower()
        if value in ("final", "best", "latest"):
            return cls(value)
        if value.isdigit():
            return cls("step", int(value))
        raise UsageError(f"--checkpoint {text!r}: expected final, best, latest or a step number such as 500")

    def __str__(self) -> str:
        return str(self.step) if self.mode == "step" else self.mode


@dataclass(frozen=True)
class Selection:
    """The checkpoint chosen inside SOURCE: ``subdir`` ("" = SOURCE itself) holds either
    full weights or an adapter; ``root_files`` are the top-level names, where the
    Trainer also keeps the tokenizer."""

    source_kind: SourceKind
    subdir: str
    is_adapter: bool
    explanation: str
    candidates: list[str] = field(default_factory=list)


def _dirs(listing: list[ObjectInfo]) -> dict[str, set[str]]:
    """folder ("" for the top) → the file names directly inside it."""
    out: dict[str, set[str]] = {}
    for obj in listing:
        parent = str(PurePosixPath(obj.name).parent)
        out.setdefault("" if parent == "." else parent, set()).add(PurePosixPath(obj.name).name)
    return out


def checkpoint_kind(files: set[str]) -> str | None:
    """"full", "adapter" or None for the files of one folder."""
    weights = {f for f in files if f.endswith((".safetensors", ".bin"))
               and not f.startswith("adapter_model") and not is_training_state(f)}
    if "config.json" in files and weights:
        return "full"
    if "adapter_config.json" in files and files & {"adapter_model.safetensors", "adapter_model.bin"}:
        return "adapter"
    return None


def _step_of(path: str) -> int | None:
    match = _STEP_NAME.match(PurePosixPath(path).name)
    return int(match.group(1)) if match else None


def _describe(path: str) -> str:
    return path or "(top level)"


def discover(folder: Folder, choice: CheckpointChoice, listing: list[ObjectInfo] | None = None) -> Selection:
    """Chooses the checkpoint to export from ``folder``; raises ``CheckpointError`` with
    what was found when nothing fits."""
    listing = folder.list() if listing is None else listing
    dirs = _dirs(listing)
    kinds = {d: k for d, files in dirs.items() if (k := checkpoint_kind(files))}
    kinds = {d: k for d, k in kinds.items() if not any(p.startswith(("_staging", ".")) for p in PurePosixPath(d).parts)}
    trainer = sorted((int(m.group(1)), d) for d in dirs.keys() | _parents(dirs) if (m := _TRAINER_CKPT.match(d)))
    if trainer:
        return _from_trainer(folder, choice, dirs, kinds, trainer)
    if "" in kinds:
        if choice.mode not in ("final", "latest"):
            raise UsageError(
                f"{folder.uri}: is a single checkpoint, so --checkpoint {choice} has nothing to choose from; "
                "drop --checkpoint or point SOURCE at the training output folder"
            )
        kind = "peft-adapter" if kinds[""] == "adapter" else "full-checkpoint"
        what = "a PEFT LoRA adapter (adapter_config.json)" if kinds[""] == "adapter" else "full model weights with config.json"
        return Selection(kind, "", kinds[""] == "adapter", f"{folder.uri} holds {what} at its top level", [""])
    if not kinds and (fmt := unconsolidated(dirs, "")) is not None:
        raise CheckpointError(f"{folder.uri}: is {fmt}")
    if not kinds:
        shown = ", ".join(sorted(o.name for o in listing)[:8]) or "nothing"
        raise CheckpointError(
            f"{folder.uri}: no checkpoint found (looked for config.json with *.safetensors/*.bin weights, "
            f"or adapter_config.json with adapter_model.*, at any depth; found {shown}). "
            "Point SOURCE at a tuning job's output folder or a model folder."
        )
    return _from_tree(folder, choice, kinds)


def _parents(dirs: dict[str, set[str]]) -> set[str]:
    return {str(p) for d in dirs for p in PurePosixPath(d).parents if str(p) != "."}


def _from_trainer(folder: Folder, choice: CheckpointChoice, dirs: dict[str, set[str]],
                  kinds: dict[str, str], trainer: list[tuple[int, str]]) -> Selection:
    steps = [s for s, _ in trainer]
    latest_step, latest = trainer[-1]
    why: str
    if choice.mode == "final" and "" in kinds:
        chosen, why = "", "the final model the Trainer saved at the top level (--checkpoint final)"
    elif choice.mode in ("final", "latest"):
        chosen = latest
        why = (f"the latest checkpoint, step {latest_step} of {steps}"
               + (" (--checkpoint final, and no final model at the top level)" if choice.mode == "final" else ""))
    elif choice.mode == "step":
        matches = [d for s, d in trainer if s == choice.step]
        if not matches:
            raise UsageError(f"{folder.uri}: no checkpoint-{choice.step}; the steps saved are {steps}")
        chosen, why = matches[0], f"step {choice.step} as asked (--checkpoint {choice.step})"
    else:
        chosen, why = _best(folder, dirs, latest), "the best checkpoint named by trainer_state.json's best_model_checkpoint"
    if chosen not in kinds:
        where = folder.join(chosen) if chosen else folder.uri
        if (fmt := unconsolidated(dirs, chosen)) is not None:
            raise CheckpointError(f"{where}: is {fmt}")
        raise CheckpointError(
            f"{where}: holds neither model weights with config.json nor a LoRA adapter; "
            "choose another --checkpoint",
        )
    return Selection("hf-trainer", chosen, kinds[chosen] == "adapter",
                     f"{folder.uri} is a Hugging Face Trainer output (checkpoints at steps {steps}); "
                     f"exporting {_describe(chosen)}: {why}", [d for _, d in trainer])


def _best(folder: Folder, dirs: dict[str, set[str]], latest: str) -> str:
    for where in ("", latest):
        if "trainer_state.json" in dirs.get(where, set()):
            name = f"{where}/trainer_state.json" if where else "trainer_state.json"
            try:
                state = bounded_json.read_json(folder, name)
            except bounded_json.JsonLimitError as e:
                raise CheckpointError(str(e), file=name) from e
            best = state.get("best_model_checkpoint") if isinstance(state, dict) else None
            if not best:
                raise CheckpointError(
                    f"{folder.join(name)}: best_model_checkpoint is not set (training ran without "
                    "metric_for_best_model); use --checkpoint latest or a step number", file=name)
            base = PurePosixPath(str(best).replace("\\", "/")).name
            if base not in dirs and base not in _parents(dirs):
                raise CheckpointError(
                    f"{folder.join(name)}: best_model_checkpoint {best!r} is not in this folder (deleted by "
                    "save_total_limit?); use --checkpoint latest or a step number", file=name)
            return base
    raise CheckpointError(f"{folder.uri}: --checkpoint best needs trainer_state.json, which is missing")


def _from_tree(folder: Folder, choice: CheckpointChoice, kinds: dict[str, str]) -> Selection:
    """A checkpoint deeper in the tree (Vertex tuning outputs): prefer a folder named
    final (or the highest step) under postprocess/, then node-0, then the shallowest."""
    candidates = sorted(kinds)

    def preference(path: str) -> tuple[int, int, int, str]:
        return (0 if "postprocess" in PurePosixPath(path).parts else 1,
                0 if "node-0" in PurePosixPath(path).parts else 1, path.count("/"), path)

    finals = [d for d in candidates if PurePosixPath(d).name.lower() in _FINAL_NAMES]
    stepped = sorted(((s, d) for d in candidates if (s := _step_of(d)) is not None), key=lambda t: (-t[0], preference(t[1])))
    if choice.mode == "best":
        raise UsageError(f"{folder.uri}: --checkpoint best needs an HF Trainer output (trainer_state.json); "
                         f"found checkpoints {candidates}")
    if choice.mode == "step":
        pool = [d for s, d in stepped if s == choice.step]
        why = f"step {choice.step} as asked"
        if not pool:
            raise UsageError(f"{folder.uri}: no checkpoint for step {choice.step}; found {candidates}")
    elif choice.mode == "final" and finals:
        pool, why = finals, "the folder named final"
    elif stepped:
        pool, why = [d for s, d in stepped if s == stepped[0][0]], f"the highest step ({stepped[0][0]})"
    else:
        pool, why = candidates, "the only kind of checkpoint present"
    chosen = sorted(pool, key=preference)[0]
    kind = "vertex-tuning" if _NODE.search(chosen) or "postprocess" in chosen else "nested-checkpoint"
    what = "a LoRA adapter" if kinds[chosen] == "adapter" else "full weights"
    others = f"; other candidates: {', '.join(c for c in candidates if c != chosen)}" if len(candidates) > 1 else ""
    label = "a Vertex AI tuning output tree" if kind == "vertex-tuning" else "a folder with a nested checkpoint"
    return Selection(kind, chosen, kinds[chosen] == "adapter",
                     f"{folder.uri} is {label}; exporting {chosen} ({what}): {why}{others}", candidates)
