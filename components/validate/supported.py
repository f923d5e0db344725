"""The supported base models (DESIGN.md §1) as data: ``supported_models.json``.

The list differs between versions of the Vertex AI documentation and will change, so
it is a versioned data file (``version``, ``source``) and this module only reads it.
A family is recognised by ``model_type`` (or, when that is absent, ``architectures``);
a size matches when the parameter count is within ``size_tolerance`` of a listed one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class SupportedModel:
    name: str
    params: int


@dataclass(frozen=True)
class Family:
    family: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    tie_word_embeddings_default: bool
    native_quantization: tuple[str, ...]
    models: tuple[SupportedModel, ...]


@dataclass(frozen=True)
class SupportedList:
    version: str
    source: str
    size_tolerance: float
    families: tuple[Family, ...]

    def family_for(self, model_type: str | None, architectures: list[str]) -> Family | None:
        """The family of a config: by ``model_type`` first, then by ``architectures``."""
        for fam in self.families:
            if model_type and model_type in fam.model_types:
                return fam
        if not model_type:
            for fam in self.families:
                if any(a in fam.architectures for a in architectures):
                    return fam
        return None

    def match_size(self, family: Family, params: int) -> SupportedModel | None:
        """The listed model whose published count is closest to ``params``, when within
        the tolerance."""
        best = min(family.models, key=lambda m: abs(params - m.params), default=None)
        if best is None or abs(params - best.params) > self.size_tolerance * best.params:
            return None
        return best


def parse_supported(doc: dict[str, Any]) -> SupportedList:
    families = tuple(
        Family(
            family=f["family"],
            model_types=tuple(f["model_types"]),
            architectures=tuple(f.get("architectures", [])),
            tie_word_embeddings_default=bool(f.get("tie_word_embeddings_default", False)),
            native_quantization=tuple(f.get("native_quantization", [])),
            models=tuple(SupportedModel(m["name"], int(m["params"])) for m in f["models"]),
        )
        for f in doc["families"]
    )
    return SupportedList(str(doc["version"]), str(doc["source"]), float(doc["size_tolerance"]), families)


@lru_cache(maxsize=1)
def load_supported() -> SupportedList:
    """The packaged list (read once per process)."""
    text = resources.files("tune2serve.components.validate").joinpath("supported_models.json").read_text("utf-8")
    return parse_supported(json.loads(text))
