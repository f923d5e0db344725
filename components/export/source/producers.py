"""What trainers write that export cannot turn into the model they trained, recognised
by name and refused with what to do instead — never guessed at.

* LoRA initialisations that change the *base* (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA): the
  adapter is relative to a residual base PEFT rebuilt at init time (SVD/QR of W, a
  quantization residual, gradient statistics), not to the weights in ``--base-model``;
  merging it into W gives a model 0.2–0.4 off in the logits with exit 0. PEFT converts
  such an adapter into a plain LoRA when it is saved with
  ``path_initial_model_for_weight_conversion``; that output merges exactly.
* A full checkpoint whose tensors keep PEFT's wrapper names (``base_model.model.…``,
  ``…base_layer.weight``, ``lora_A``): a PeftModel's state dict saved as if it were the
  model (accelerate/FSDP FULL_STATE_DICT of a PeftModel). transformers would load it with
  every weight random.
* Unconsolidated distributed checkpoints: DeepSpeed ZeRO (``global_stepN/``) and FSDP
  sharded state dicts (``pytorch_model_fsdp_0/``, torch.distributed.checkpoint): the
  weights are partitioned across ranks' files and must be consolidated first.
* An adapter saved from partitioned parameters: under DeepSpeed ZeRO-3 without
  ``stage3_gather_16bit_weights_on_model_save`` the HF Trainer saves the PeftModel with
  an empty state dict (``adapter_model.safetensors`` holding no tensors), and a state
  dict taken without gathering holds empty shards (shape ``[0]``). Merged, either would
  export the base model unchanged, with exit 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from tune2serve.components.errors import CheckpointError, MergeError

# init_lora_weights values that leave the base untouched: B·A starts at 0 (or the base is
# not modified), so merging into the original W reproduces the trained model.
PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")
_RESIDUAL_INITS = {
    "pissa": "PiSSA (the base is the SVD residual W - U_r S_r V_r)",
    "olora": "OLoRA (the base is the QR residual of W)",
    "corda": "CorDA (the base is a residual of a context-oriented decomposition)",
    "loftq": "LoftQ (the base is a quantization residual)",
    "lora_ga": "LoRA-GA (the base is offset by the gradient-aligned initial update)",
}


def check_adapter_config(doc: dict[str, Any], file: str) -> None:
    """Refuses adapters whose merge export cannot reproduce exactly."""
    init = doc.get("init_lora_weights", True)
    if init not in PLAIN_INITS:
        key = str(init).lower()
        what = next((v for k, v in _RESIDUAL_INITS.items() if key.startswith(k)), None)
        if what:
            raise MergeError(f"{file}: init_lora_weights={init!r} — {what}: the adapter is relative to a base that "
                             "is not --base-model, so merging it into the base weights would be silently wrong. Save "
                             "the adapter with PEFT's save_pretrained(..., path_initial_model_for_weight_conversion=...) "
                             "to convert it into a plain LoRA, or merge with PEFT and export the merged folder", file=file)
        raise MergeError(f"{file}: init_lora_weights={init!r} is not an initialisation export knows "
                         f"(it merges {', '.join(map(repr, PLAIN_INITS))}); merge with PEFT and export the merged "
                         "folder", file=file)


_WRAPPED = re.compile(r"(^base_model\.model\.)|(\.base_layer\.)|(\.lora_[AB]\.)|(\.lora_magnitude_vector)")


def check_full_weights(names: Iterable[str], label: str) -> None:
    """Refuses full weights saved with PEFT's wrapper names (see the module docstring)."""
    wrapped = sorted(n for n in names if _WRAPPED.search(n))
    if wrapped:
        raise CheckpointError(
            f"{label}: holds full weights under PEFT wrapper names ({wrapped[0]}, {len(wrapped)} tensors): a "
            "PeftModel's state dict saved as the model (e.g. accelerate/FSDP FULL_STATE_DICT of a PeftModel); "
            "transformers would load it with those weights random. Save the unwrapped model instead "
            "(model.merge_and_unload().save_pretrained(...), or the adapter alone with model.save_pretrained)")


_ZERO = re.compile(r"(^|/)global_step\d+$")
_FSDP = re.compile(r"(^|/)pytorch_model_fsdp(_\d+)?$")


def unconsolidated(dirs: dict[str, set[str]], where: str) -> str | None:
    """A sentence naming the distributed format under ``where`` and the command that
    consolidates it, or None."""
    prefix = f"{where}/" if where else ""
    sub = [d for d in dirs if d.startswith(prefix) or not where]
    zero = next((d for d in sub if _ZERO.search(d)), None)
    if zero or "zero_to_fp32.py" in dirs.get(where, set()):
        at = where or "."
        return (f"a DeepSpeed ZeRO checkpoint ({zero or 'zero_to_fp32.py'}: the weights are partitioned across ranks). "
                f"Consolidate it with `python {at}/zero_to_fp32.py {at} consolidated/ --safe_serialization`, copy "
                "config.json and the tokenizer beside it, and export that folder (or train with "
                "stage3_gather_16bit_weights_on_model_save: true)")
    fsdp = next((d for d in sub if _FSDP.search(d) and any(f.endswith(".distcp") for f in dirs.get(d, set()))), None)
    if fsdp:
        return (f"an FSDP sharded state dict ({fsdp}/, torch.distributed.checkpoint). Consolidate it with "
                f"`accelerate merge-weights {fsdp} consolidated/` (or torch.distributed.checkpoint.format_utils."
                "dcp_to_torch_save), copy config.json and the tokenizer beside it, and export that folder (or save "
                "with fsdp_state_dict_type FULL_STATE_DICT)")
    return None


def check_gathered(tensors: dict[str, Any], file: str) -> None:
    """Refuses an adapter file with no tensors or with empty ones (see the module docstring)."""
    empty = sorted(k for k, v in tensors.items() if math.prod(v.shape) == 0)
    if tensors and not empty:
        return
    what = "holds no tensors" if not tensors else f"holds empty tensors ({empty[0]}: shape {list(tensors[empty[0]].shape)}, {len(empty)} in all)"
    raise MergeError(
        f"{file}: {what}, so merging it would export the base model unchanged. This is what the HF Trainer saves under "
        "DeepSpeed ZeRO-3 without stage3_gather_16bit_weights_on_model_save (or FSDP without gathering): the trained "
        "adapter is only in the partitioned state (global_stepN/). Train or save again with "
        "stage3_gather_16bit_weights_on_model_save: true, or consolidate global_stepN/ with zero_to_fp32.py, load it into "
        "the PeftModel and save the adapter with save_pretrained", file=file)
