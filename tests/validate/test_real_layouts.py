"""Every model of the supported list, as published: its exact tensor names, shapes and
dtypes (``published.py``: transformers on the meta device + the release's FP8 / MXFP4 /
MTP tensors) written as sparse safetensors (headers only; the data is a hole), with the
published config.json. validate must accept each, recognise family and size, and catch
one mutation of each: a tensor dropped, a wrong shape, no chat template, a user
quantization config. The parameter counts equal the published ones (supported list)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.validate.published import PUBLISHED, Layout, parameters, published_layout
from tune2serve.components.checkpoint.safetensors_header import DTYPE_BYTES
from tune2serve.components.validate import ValidateOptions, validate_checkpoint
from tune2serve.components.validate.supported import load_supported

SHARD_BYTES = 50 * 1024**3  # apparent size; the files are sparse
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
LISTED = {m.name: (f.family, m.params) for f in load_supported().families for m in f.models}


def _tokenizer_json() -> str:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4}
    return json.dumps({"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
                       "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
                       "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}})


def write_sparse_checkpoint(folder: Path, config: dict[str, Any], layout: Layout,
                            tokenizer_config: dict[str, Any] | None = None) -> None:
    """Shards of at most SHARD_BYTES with real headers and holes for data, the index,
    config.json and a tokenizer with a chat template."""
    folder.mkdir(parents=True)
    shards: list[list[tuple[str, tuple[int, ...], str]]] = [[]]
    size = 0
    for name in sorted(layout):
        shape, dtype = layout[name]
        n = math.prod(shape) * int(DTYPE_BYTES[dtype])
        if size + n > SHARD_BYTES and shards[-1]:
            shards.append([])
            size = 0
        shards[-1].append((name, shape, dtype))
        size += n
    weight_map: dict[str, str] = {}
    total = 0
    for k, tensors in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape, dtype in tensors:
            n = math.prod(shape) * int(DTYPE_BYTES[dtype])
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = file
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / file, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)
        total += offset
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(_tokenizer_json())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        tokenizer_config if tokenizer_config is not None else {"chat_template": CHAT_TEMPLATE}))


def _codes(report: Any, severity: str = "error") -> list[str]:
    return [f.code for f in report.findings if f.severity == severity]


def test_every_supported_model_has_a_published_layout() -> None:
    assert set(PUBLISHED) == set(LISTED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_layout_matches_the_published_parameter_count(name: str) -> None:
    assert parameters(published_layout(name)) == pytest.approx(LISTED[name][1], rel=2e-5)


@pytest.fixture(scope="module")
def published_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("published")


def _write(root: Path, name: str, tag: str, mutate_layout: Any = None, mutate_config: Any = None,
           tokenizer_config: dict[str, Any] | None = None) -> Path:
    _cls, config = PUBLISHED[name]
    layout = dict(published_layout(name))
    config = json.loads(json.dumps(config))
    if mutate_layout:
        mutate_layout(layout)
    if mutate_config:
        mutate_config(config)
    folder = root / (name.replace(" ", "").replace("/", "_") + "-" + tag)
    write_sparse_checkpoint(folder, config, layout, tokenizer_config)
    return folder


def _pick(layout: Layout, *parts: str) -> str:
    """A representative tensor: one holding every part and ending with the last, from
    the middle of the model (natural order)."""
    names = sorted((n for n in layout if all(p in n for p in parts) and n.endswith(parts[-1])),
                   key=lambda n: [int(x) if x.isdigit() else x for x in n.split(".")])
    return names[len(names) // 2]


# The tensor each model loses, and the one whose shape is halved: experts where the
# model has them, else attention.
def _victims(name: str) -> tuple[str, str]:
    layout = published_layout(name)
    model_type = PUBLISHED[name][1]["model_type"]
    if model_type == "mixtral":
        return _pick(layout, "experts.", ".w2.weight"), _pick(layout, "experts.", ".w1.weight")
    if model_type == "gpt_oss":
        return _pick(layout, "down_proj_blocks"), _pick(layout, "gate_up_proj_blocks")
    if model_type == "llama4":
        return _pick(layout, "language_model", "experts.down_proj"), _pick(layout, "language_model", "experts.gate_up_proj")
    if model_type in ("qwen3_moe", "qwen3_next", "deepseek_v3"):
        return _pick(layout, "model.layers.", "experts.", "down_proj.weight"), \
            _pick(layout, "model.layers.", "experts.", "gate_proj.weight")
    if model_type == "phi3":
        return _pick(layout, "self_attn.o_proj.weight"), _pick(layout, "self_attn.qkv_proj.weight")
    return _pick(layout, "self_attn.o_proj.weight"), _pick(layout, "self_attn.q_proj.weight")


def _halve(layout: Layout, name: str) -> None:
    shape, dtype = layout[name]
    layout[name] = ((shape[0] // 2, *shape[1:]), dtype)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_validate_accepts_the_published_layout_and_catches_each_mutation(name: str, published_dir: Path) -> None:
    family, _params = LISTED[name]
    good = validate_checkpoint(str(_write(published_dir, name, "good")))
    assert _codes(good) == [], [f.message for f in good.findings if f.severity == "error"]
    assert (good.summary["family"], good.summary["matched_model"]) == (family, name)
    assert good.summary["kv_cache_gb"] > 0

    dropped, reshaped = _victims(name)
    report = validate_checkpoint(str(_write(published_dir, name, "dropped", lambda lay: lay.pop(dropped))))
    assert "tensor-missing" in _codes(report)
    assert any(dropped in f.message for f in report.findings if f.code == "tensor-missing")

    report = validate_checkpoint(str(_write(published_dir, name, "reshaped", lambda lay: _halve(lay, reshaped))))
    assert any(f.code == "shape-mismatch" and reshaped in f.message for f in report.findings)

    report = validate_checkpoint(str(_write(published_dir, name, "no-template", tokenizer_config={})))
    assert _codes(report) == ["no-chat-template"]

    def quantize(config: dict[str, Any]) -> None:
        config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}

    report = validate_checkpoint(str(_write(published_dir, name, "user-quant", mutate_config=quantize)))
    assert "quantized-user" in _codes(report)


def test_published_memory_estimates_use_the_class_defaults(published_dir: Path) -> None:
    """Gemma-3-12B's KV cache is 2 × 48 layers × 8 kv heads × 256 (class default
    head_dim, not 3840 / 16 = 240) × 2 bytes a token."""
    report = validate_checkpoint(str(_write(published_dir, "Gemma-3-12B", "memory")),
                                 ValidateOptions())
    per_token = 2 * 48 * 8 * 256 * 2
    assert report.summary["kv_cache_gb"] == round(per_token * 4 * 4096 / 1024**3, 2)


def test_auto_map_naming_other_classes_is_still_remote_code(published_dir: Path) -> None:
    """The published DeepSeek auto_map (its own classes) is ignored; a class of another
    name on a native model_type is custom code the native class does not reproduce."""
    def evil(config: dict[str, Any]) -> None:
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}

    report = validate_checkpoint(str(_write(published_dir, "Llama-3.2-1B", "evil", mutate_config=evil)))
    assert _codes(report) == ["remote-code"]


def test_a_layer_beyond_the_mtp_layers_is_refused(published_dir: Path) -> None:
    name = "DeepSeek-V3 / DeepSeek-R1 / DeepSeek-V3.1"

    def add_layer(layout: Layout) -> None:
        layout["model.layers.62.input_layernorm.weight"] = ((7168,), "BF16")

    report = validate_checkpoint(str(_write(published_dir, name, "layer62", add_layer)))
    assert _codes(report) == ["layer-count-mismatch"]
    assert "61 + 1 num_nextn_predict_layers" in next(f.message for f in report.findings if f.severity == "error")


@pytest.mark.parametrize(("change", "codes"), [
    ({"scoring_func": None}, ["router-scoring-not-sigmoid"]),  # absent: vLLM takes softmax
    ({"scoring_func": "softmax"}, ["router-scoring-not-sigmoid"]),
    ({"topk_method": None}, ["router-bias-without-noaux-tc"]),  # transformers' DeepseekV3Config writes none
    ({"topk_method": "greedy", "scoring_func": None}, ["router-scoring-not-sigmoid", "router-bias-without-noaux-tc"]),
])
def test_deepseek_router_keys_vllm_obeys_and_transformers_ignores(published_dir: Path, change: dict[str, Any],
                                                                   codes: list[str]) -> None:
    """The published DeepSeek-V3 config says both as vLLM needs them (accepted above);
    each left out or changed is refused, naming the key and what vLLM would do."""
    name = "DeepSeek-V3 / DeepSeek-R1 / DeepSeek-V3.1"

    def edit(config: dict[str, Any]) -> None:
        for key, value in change.items():
            config.pop(key) if value is None else config.update({key: value})

    report = validate_checkpoint(str(_write(published_dir, name, "router-" + "-".join(f"{k}{v}" for k, v in change.items()),
                                            mutate_config=edit)))
    assert _codes(report) == codes
    if "router-scoring-not-sigmoid" in codes:
        message = next(f.message for f in report.findings if f.code == "router-scoring-not-sigmoid")
        assert "config.json" in message and "softmax when absent" in message and '"scoring_func": "sigmoid"' in message
