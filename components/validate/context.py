"""What the checks share about one checkpoint: the listing, the parsed JSON files, the
safetensors headers, and the options. Built once by ``validate_checkpoint``; each check
reads it and returns findings (the weights check fills ``headers`` and ``tensors``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.checkpoint.index import WeightFiles, WeightIndex, find_weight_files
from tune2serve.components.checkpoint.safetensors_header import FLOAT_DTYPES, SafetensorsHeader, TensorInfo
from tune2serve.components.checkpoint.storage import Folder, ObjectInfo
from tune2serve.components.validate.architectures import effective_text_config
from tune2serve.components.vertex.machine_spec import MachineSpec

CONFIG = "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_MODEL = "tokenizer.model"


@dataclass(frozen=True)
class ValidateOptions:
    """How to validate. ``machine_spec`` comes from ``vertex.machine_spec.parse_machine_spec``."""

    strict: bool = False
    machine_spec: MachineSpec | None = None
    verify_checksums: bool = False
    base_model: str | None = None
    scan_values: bool = False  # stream every float tensor and check it is finite (reads all the data)
    target_vllm: str | None = None  # the serving engine the verdict is for (engines.json; None: the default)


@dataclass(frozen=True)
class JsonFile:
    """A small JSON file of the checkpoint: its document, or why it has none."""

    name: str
    doc: Any = None
    error: str | None = None  # "missing" | "empty" | "too-large" | a parse message


@dataclass
class Checkpoint:
    folder: Folder
    options: ValidateOptions
    sizes: dict[str, int]
    symlinks_outside: list[str]
    not_regular: dict[str, str]
    weights: WeightFiles
    config: JsonFile
    tokenizer_config: JsonFile
    headers: dict[str, SafetensorsHeader] = field(default_factory=dict)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    tensor_files: dict[str, str] = field(default_factory=dict)
    index: WeightIndex | None = None
    tokenizer: Any = None  # tokenizer.json loaded by the tokenizer check (a tokenizers.Tokenizer)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def config_doc(self) -> dict[str, Any] | None:
        return self.config.doc if isinstance(self.config.doc, dict) else None

    @property
    def text_config(self) -> dict[str, Any]:
        """The language model's config as the server reads it: ``text_config`` of
        multimodal configs (Gemma-3, Llama-4) over the top level, absent keys filled with
        the transformers config class defaults; {} when there is none."""
        return effective_text_config(self.config_doc or {}) if self.config_doc is not None else {}

    def has(self, name: str) -> bool:
        return name in self.sizes

    def weight_bytes(self) -> int:
        return sum(self.sizes.get(n, 0) for n in self.weights.safetensors + self.weights.bins)

    def parameter_count(self) -> int:
        """Parameters from the headers. MXFP4 ``*_blocks`` (U8) hold two values a byte;
        their ``*_scales`` are not parameters (gpt-oss-20b: 20.91 B, as published)."""
        total = 0
        for t in self.tensors.values():
            if t.dtype == "U8" and t.name.endswith("_scales"):
                continue
            n = math.prod(t.shape)
            total += 2 * n if t.dtype == "U8" and t.name.endswith("_blocks") else n
        return total

    def serving_weight_bytes(self) -> int:
        """Bytes of the weights as vLLM holds them: floats in bf16, the rest as stored."""
        total = 0
        for t in self.tensors.values():
            total += 2 * math.prod(t.shape) if t.dtype in FLOAT_DTYPES else t.nbytes
        return total


def load_checkpoint(folder: Folder, listing: list[ObjectInfo], options: ValidateOptions) -> Checkpoint:
    usable = [o for o in listing if not o.is_symlink_outside and not o.not_regular]
    sizes = {o.name: o.size for o in usable}
    return Checkpoint(
        folder=folder,
        options=options,
        sizes=sizes,
        symlinks_outside=[o.name for o in listing if o.is_symlink_outside],
        not_regular={o.name: o.not_regular for o in listing if o.not_regular},
        weights=find_weight_files(usable),
        config=read_json_file(folder, sizes, CONFIG),
        tokenizer_config=read_json_file(folder, sizes, TOKENIZER_CONFIG),
    )


def read_json_file(folder: Folder, sizes: dict[str, int], name: str) -> JsonFile:
    if name not in sizes:
        return JsonFile(name, error="missing")
    if sizes[name] == 0:
        return JsonFile(name, error="empty")
    if sizes[name] > bounded_json.max_bytes_for(name):
        return JsonFile(name, error="too-large")
    try:
        return JsonFile(name, doc=bounded_json.loads(folder.read_bytes(name), name))
    except bounded_json.JsonLimitError as e:
        reason = str(e).removeprefix(f"{name}: ")
        return JsonFile(name, error=reason if reason.startswith("not ") else f"refused: {reason}")
