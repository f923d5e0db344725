"""The serving engine a verdict is for, as data (``engines.json``, ``vllm_architectures.json``).

A verdict is about one engine: the vLLM that will serve the folder and the transformers
it reads configs with. ``--target-vllm`` names it (default: the vLLM the local stack runs,
which is also the one ``tests/vllm`` proves the verdict against); validate warns where
the config was written by a newer transformers than the target's (keys it cannot read,
a model_type it does not know). No vLLM or transformers import: the tables are data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from tune2serve.components.errors import UsageError


def _load(name: str) -> dict[str, Any]:
    text = resources.files("tune2serve.components.validate").joinpath(name).read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def engines_doc() -> dict[str, Any]:
    return _load("engines.json")


@lru_cache(maxsize=1)
def vllm_architectures() -> frozenset[str]:
    """Every ``architectures`` class vLLM's model registry knows (generated from it)."""
    return frozenset(_load("vllm_architectures.json")["architectures"])


def version_tuple(version: str) -> tuple[int, ...]:
    """``"5.16.1"`` → (5, 16, 1); a suffix (``.post1``, ``rc1``, ``+cpu``) is ignored."""
    out = []
    for part in version.split("+", 1)[0].split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


@dataclass(frozen=True)
class Target:
    """The engine a verdict is for: a vLLM release and the oldest transformers it accepts."""

    vllm: str
    transformers: str
    requires: str

    @property
    def name(self) -> str:
        return f"vLLM {self.vllm} (transformers >= {self.transformers})"


def default_target() -> str:
    return str(engines_doc()["default_target"])


def known_targets() -> list[str]:
    return sorted(engines_doc()["vllm"], key=version_tuple)


def target(vllm: str | None) -> Target:
    """The engine ``--target-vllm`` names (None: the default).

    Raises:
        UsageError: a version the table does not know (exit 2, naming the known ones).
    """
    version = vllm or default_target()
    entry = engines_doc()["vllm"].get(version.strip())
    if entry is None:
        raise UsageError(f"--target-vllm {version!r}: not a vLLM release validate knows; known: "
                         f"{', '.join(known_targets())} (components/validate/engines.json)")
    return Target(version.strip(), str(entry["transformers"]), str(entry["requires"]))


def proven() -> dict[str, str]:
    """The vLLM and transformers versions the verdict was proven against (tests/vllm)."""
    return {k: str(v) for k, v in engines_doc()["proven"].items()}
