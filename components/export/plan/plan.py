"""What the export will write, decided before a byte is written.

From the tensors' headers (and the adapter, when there is one) this works out every
output tensor's name, dtype and shape, and what ``config.json`` must then say about
the vocabulary and tied embeddings, so that a merge can never leave a config that
disagrees with its weights (tied embeddings with a resized vocabulary are a classic
way to ruin a merged model: the server would tie ``lm_head`` to the new embedding
table, or drop a trained ``lm_head``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.checkpoint.tensor_reader import FLOAT_NAMES, TensorMeta
from tune2serve.components.errors import MergeError, UsageError
from tune2serve.components.export.plan.config_clean import config_dtype, is_tied
from tune2serve.components.export.merge.merge import AdapterPlan
from tune2serve.components.export.publish.writer import OutTensor

DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
EMBED_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")
LM_HEAD_NAMES = ("lm_head.weight", "embed_out.weight")


@dataclass
class OutputPlan:
    tensors: list[OutTensor]
    dtype: str                          # "bfloat16" | "float16" | "float32"
    vocab_size: int | None = None
    tie_word_embeddings: bool | None = None  # None: leave the config's value alone
    notes: list[str] = field(default_factory=list)

    @property
    def parameter_count(self) -> int:
        total = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            total += n
        return total


def output_dtype(requested: str, config: dict[str, Any], metas: dict[str, TensorMeta]) -> str:
    """``auto`` = the base's dtype: config.json's, else the most common float dtype."""
    if requested != "auto":
        if requested not in DTYPES:
            raise UsageError(f"--dtype {requested!r}: expected auto, bfloat16, float16 or float32")
        return requested
    declared = config_dtype(config)
    if declared in DTYPES:
        return declared
    by_bytes: Counter[str] = Counter()
    for m in metas.values():
        if m.dtype in FLOAT_NAMES:
            by_bytes[m.dtype] += m.nbytes
    st = by_bytes.most_common(1)[0][0] if by_bytes else "F32"
    return {v: k for k, v in DTYPES.items()}.get(st, "float32")


def plan_output(metas: dict[str, TensorMeta], config: dict[str, Any], dtype: str,
                adapter: AdapterPlan | None, label: str) -> OutputPlan:
    """The tensors to write (base order: by file, then offset) and the config facts."""
    st = DTYPES[dtype]
    order = sorted(metas.values(), key=lambda m: (m.file, m.offset, m.name))
    shapes = {m.name: m.shape for m in order}
    dtypes = {m.name: m.dtype for m in order}
    plan = OutputPlan([], dtype)
    extra: list[str] = []
    if adapter is not None:
        for name, tensor in adapter.replacements.items():
            shapes[name] = tuple(tensor.shape)
            if name not in metas:
                if name not in LM_HEAD_NAMES:
                    raise MergeError(f"{label}: the adapter saves a tensor {name} that the base model does not have; "
                                     "the adapter was trained on a different base model — pass the right --base-model")
                dtypes[name] = "F32"
                extra.append(name)
    names = [m.name for m in order] + extra
    plan.tensors = [OutTensor(n, st if dtypes[n] in FLOAT_NAMES else dtypes[n], shapes[n]) for n in names]
    if adapter is not None:
        _settle_embeddings(plan, metas, shapes, config, label)
    return plan


def _settle_embeddings(plan: OutputPlan, metas: dict[str, TensorMeta], shapes: dict[str, tuple[int, ...]],
                       config: dict[str, Any], label: str) -> None:
    written = {t.name for t in plan.tensors}
    embed = next((n for n in written if n.endswith(EMBED_SUFFIXES)), None)
    head = next((n for n in LM_HEAD_NAMES if n in written), None)
    if embed is None:
        return
    rows = shapes[embed][0]
    plan.vocab_size = rows
    tied_in_base = is_tied(config) and not any(n in metas for n in LM_HEAD_NAMES)
    if head is None:
        plan.tie_word_embeddings = True if tied_in_base else None
        return
    if shapes[head][0] != rows:
        raise MergeError(f"{label}: after the merge {embed} has {rows} rows but {head} has {shapes[head][0]}; "
                         "the adapter resized the vocabulary for one of them only — retrain with both in modules_to_save")
    if tied_in_base:
        plan.notes.append(f"the adapter trains {head} on its own, so the export unties it from {embed} and writes both")
    plan.tie_word_embeddings = False
