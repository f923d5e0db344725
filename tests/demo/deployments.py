"""Shared by the deploy, smoke-test and demo tests: the demo models (tiny base + tuned
LoRA), exported once per session to the local stack's bucket with the real export, and
the environment that points the library at the stack (for module-scoped fixtures,
which cannot use the function-scoped ``stack_env``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_CACHE: dict[Any, Any] = {}


def demo_models(root: Path) -> tuple[Path, Path]:
    """(tiny base model, tuned LoRA adapter), made once per session."""
    if "models" not in _CACHE:
        from tune2serve.demo.tiny_models import make_tiny_model
        from tune2serve.demo.tuned_adapter import make_tuned_adapter

        base = make_tiny_model(root / "base")
        _CACHE["models"] = (base, make_tuned_adapter(base, root / "adapter"))
    return _CACHE["models"]


@contextlib.contextmanager
def stack_environ(stack: Any) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in stack.env.items():
            mp.setenv(name, value)
        mp.setenv("TUNE2SERVE_LOG_FORMAT", "json")
        yield


def exported(stack: Any, root: Path, which: str) -> str:
    """gs:// URI of the tuned (merged by the real export) or base model on the stack."""
    key = (str(stack.home), which)
    if key not in _CACHE:
        from tune2serve.components.export.export import export_checkpoint

        base, adapter = demo_models(root)
        dest = f"gs://{stack.bucket}/exports/{which}"
        with stack_environ(stack):
            if which == "tuned":
                export_checkpoint(str(adapter), dest, base_model=str(base))
            else:
                export_checkpoint(str(base), dest)
        _CACHE[key] = dest
    return str(_CACHE[key])


MACHINE_FLAGS = ["--machine-type", "g2-standard-12", "--accelerator-type", "NVIDIA_L4", "--accelerator-count", "1"]
