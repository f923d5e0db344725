"""In-memory tensor names → the names on disk, by transformers' own conversion rules.

transformers 5 loads some checkpoints under other names than they are stored with
(Gemma-3's ``language_model.model.layers.N…`` is ``model.language_model.layers.N…`` in
memory; Mixtral's router ``block_sparse_moe.gate`` is ``mlp.gate``) and reverts the
renaming when it saves. PEFT saves adapters with the in-memory names. Rather than a list
of prefixes, the export asks transformers: the base architecture is built on the meta
device (no memory, no weights, never remote code) and ``revert_weight_conversion`` —
what ``save_pretrained`` applies, reached through ``weight_conversion.py``, the one
adapter to that transformers internal — maps each name. Only one-to-one renamings are used;
a name transformers splits or fuses (fused experts) maps to None.
"""

from __future__ import annotations

from typing import Any

from tune2serve.components.export.plan import weight_conversion
from tune2serve.components.export.plan.weight_conversion import revert_weight_conversion
from tune2serve.components.logs import get_logger, log_event

_log = get_logger("export")


class DiskNames:
    """``to_disk(name)`` for the architecture of one base ``config.json``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._model: Any = None
        self._failed = False

    def _build(self) -> Any:
        if self._model is None and not self._failed:
            try:
                self._model = _meta_model(self.config)
            except Exception as e:  # an architecture transformers cannot build: no mapping, the caller refuses
                self._failed = True
                log_event(_log, "export.names_unmapped", f"cannot build the base architecture to map names: {e}")
        return self._model

    def parameters(self) -> dict[str, tuple[int, ...]] | None:
        """The in-memory parameter names and shapes of the base architecture."""
        model = self._build()
        return None if model is None else {n: tuple(t.shape) for n, t in model.state_dict().items()}

    def module(self, path: str) -> Any:
        """The base architecture's module at ``path`` (meta device; its attributes, such
        as an experts module's ``is_transposed``, are what PEFT reads), or None."""
        model = self._build()
        try:
            return None if model is None else model.get_submodule(path)
        except AttributeError:
            return None

    def revert(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """In-memory tensors → on-disk tensors (splits fused experts as save_pretrained does)."""
        return revert_weight_conversion(self._build(), tensors)

    def to_disk(self, name: str) -> str | None:
        model = self._build()
        if model is None:
            return None
        import torch

        revert = weight_conversion.revert_function()  # outside the try: a transformers that lacks it is said, not hidden
        try:
            out = revert(model, {name: torch.empty(0, device="meta")})
        except Exception:  # a converter that needs the real tensor (fused experts): not a renaming
            return None
        names = list(out)
        return names[0] if len(names) == 1 and names[0] != name else None


def _meta_model(config: dict[str, Any]) -> Any:
    import torch
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING or not archs:
        raise ValueError(f"model_type {model_type!r} / architectures {archs} is not a transformers architecture")
    cls = getattr(transformers, archs[0], None)
    # only a model class of transformers itself: never a factory, never remote code
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ValueError(f"transformers has no model class {archs[0]}")
    rest = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map", "quantization_config")}
    with torch.device("meta"):
        return cls(CONFIG_MAPPING[model_type](**rest))
