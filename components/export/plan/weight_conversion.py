"""The one place tune2serve uses a transformers internal: ``revert_weight_conversion``.

transformers 5 loads some checkpoints under other tensor names and layouts than they are
stored with (Mixtral's router ``block_sparse_moe.gate`` is ``mlp.gate`` in memory, its
per-expert ``w1/w2/w3`` are fused into ``mlp.experts.gate_up_proj``/``down_proj``) and
undoes that in ``save_pretrained`` with ``transformers.core_model_loading.
revert_weight_conversion(model, state_dict)``. No public API gives the on-disk names of a
model's in-memory tensors, and export needs exactly them (PEFT names adapters by the
in-memory names; the export writes what ``save_pretrained`` would). So the function is
reached here only: export's name mapping (``plan/names.py``) and the tests' oracles call
``revert_weight_conversion`` below, which checks the function is still there and still
takes ``(model, state_dict)``, and says so by name when a transformers release moved or
changed it (``ImportError``, never a silent fall-back). ``tests/export/
test_weight_conversion.py`` pins what it does on the locked transformers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

INTERNAL = "transformers.core_model_loading.revert_weight_conversion"
PARAMETERS = ("model", "state_dict")


def revert_function() -> Callable[[Any, dict[str, Any]], Mapping[str, Any]]:
    """transformers' function, or ImportError naming the version and what changed."""
    import transformers

    where = (f"transformers {transformers.__version__}: {INTERNAL}, which export uses to name tensors as "
             "save_pretrained does (components/export/plan/weight_conversion.py; tested against the locked "
             "transformers),")
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError as e:
        raise ImportError(f"{where} is gone; pin the transformers of requirements.txt or port the adapter") from e
    params = list(inspect.signature(revert_weight_conversion).parameters.values())
    names = tuple(p.name for p in params)
    if names[:2] != PARAMETERS or any(p.default is inspect.Parameter.empty for p in params[2:]):
        raise ImportError(f"{where} now takes {names}, not {PARAMETERS}; pin the transformers of requirements.txt "
                          "or port the adapter")
    return revert_weight_conversion


def revert_weight_conversion(model: Any, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """In-memory tensors of ``model`` → the tensors ``save_pretrained`` writes (renamed,
    fused experts split), as transformers itself does it.

    Raises:
        ImportError: the installed transformers no longer has the function this relies on.
    """
    return dict(revert_function()(model, dict(state_dict)))


__all__ = ["INTERNAL", "revert_function", "revert_weight_conversion"]
