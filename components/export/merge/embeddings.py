"""A LoRA on the input embedding of a model with tied embeddings is exported untied.

While training, PEFT applies the embedding's update only where the embedding is looked
up; the output layer keeps multiplying by the tied *base* weight. Merging the update
into the one shared tensor (what ``merge_and_unload`` does) makes the trained embedding
drive the output layer as well: logits 5–15 off the trained model. The export writes the
merged embedding and the original weight as ``lm_head.weight`` and unties them
(``plan._settle_embeddings`` then sets ``tie_word_embeddings: false``), which is the
model that was trained — PEFT's merge is not the oracle here.
"""

from __future__ import annotations

from typing import Any

from tune2serve.components.checkpoint.tensor_reader import CheckpointTensors
from tune2serve.components.export.plan.config_clean import is_tied
from tune2serve.components.export.merge.merge import AdapterPlan
from tune2serve.components.export.plan.plan import EMBED_SUFFIXES, LM_HEAD_NAMES


def untie_trained_embedding(adapter: AdapterPlan, tensors: CheckpointTensors, config: dict[str, Any]) -> None:
    """Adds the base embedding as ``lm_head.weight`` when the adapter updates the tied
    embedding of a model with no lm_head of its own and leaves the head alone."""
    if not is_tied(config) or any(n in tensors.metas for n in LM_HEAD_NAMES):
        return
    if any(n in adapter.replacements or n in adapter.deltas for n in LM_HEAD_NAMES):
        return  # the head is trained too: plan._settle_embeddings unties it already
    embed = next((n for n in adapter.deltas if n.endswith(EMBED_SUFFIXES) and n.count(".") <= 2), None)
    if embed is None:
        return
    # PEFT saves the embedding's base layer beside the LoRA (save_embedding_layers): that
    # copy, else the base file's, is the weight the output layer used in training.
    adapter.replacements["lm_head.weight"] = adapter.replacements.get(embed, tensors.read(embed))
