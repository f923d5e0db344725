"""Generates ``components/validate/vllm_architectures.json``: every ``architectures`` class
vLLM's model registry knows, and the vLLM and transformers versions it was read from.

Run with the vLLM environment's python (vLLM is not importable in the product's):
``$TUNE2SERVE_VLLM_PYTHON tests/vllm/vllm_architectures_gen.py`` rewrites the file;
``tests/vllm/test_vllm_architectures.py`` fails when the file is not what this prints.
validate reads the file (no vLLM import): a config whose ``architectures`` names no
class of the list is refused by vLLM when it inspects the config, before any weight."""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[2] / "components" / "validate" / "vllm_architectures.json"


def generate() -> dict[str, object]:
    import transformers
    import vllm
    from vllm.model_executor.models.registry import ModelRegistry

    return {
        "generated_by": "tests/vllm/vllm_architectures_gen.py (in the vLLM environment)",
        "vllm": vllm.__version__,
        "transformers": transformers.__version__,
        "architectures": sorted(ModelRegistry.get_supported_archs()),
    }


def render(doc: dict[str, object]) -> str:
    return json.dumps(doc, indent=1) + "\n"


if __name__ == "__main__":
    text = render(generate())
    if "--print" in sys.argv:
        sys.stdout.write(text)
    else:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET}")
