"""Malformed checkpoints, made from a copy of a good tiny model (tiny_models.py).

Each ``BrokenVariant`` names the good model it starts from, the mutation, and the
finding validate must report (code and file). Tests parametrize over ``VARIANTS``; the
demo (`tune2serve run`) shows two of them. Pure stdlib (plus torch for the one variant
that needs ``torch.save``), so the mutations are small and readable.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Base = Literal["llama", "qwen_sharded", "llama_bin"]
ST = "model.safetensors"
SHARD1 = "model-00001-of-00005.safetensors"
SHARD2 = "model-00002-of-00005.safetensors"
SHARD5 = "model-00005-of-00005.safetensors"
INDEX = "model.safetensors.index.json"
SENTINEL_ENV = "TUNE2SERVE_PICKLE_SENTINEL"


@dataclass(frozen=True)
class BrokenVariant:
    name: str
    base: Base
    code: str
    file: str | None
    mutate: Callable[[Path], None]
    description: str = ""


# --- safetensors helpers ----------------------------------------------------------

def read_safetensors(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_safetensors(path: Path, header: dict[str, Any], data: bytes) -> None:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def edit_header(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    header, data = read_safetensors(path)
    edit(header)
    write_safetensors(path, header, data)


def edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, indent=2))


def _tensor(header: dict[str, Any], suffix: str) -> dict[str, Any]:
    return next(v for k, v in header.items() if k.endswith(suffix))


class _RunsShell:
    """What a malicious pickle holds: unpickling it would run a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def sentinel_command() -> str:
    return f"touch {os.environ.get(SENTINEL_ENV, '/tmp/tune2serve-pickle-sentinel')}"


# --- mutations --------------------------------------------------------------------

def _truncate(p: Path) -> None:
    f = p / ST
    f.write_bytes(f.read_bytes()[:-1000])


def _header_len_huge(p: Path) -> None:
    f = p / ST
    raw = f.read_bytes()
    f.write_bytes(struct.pack("<Q", 2**60) + raw[8:])


def _offsets_past_end(p: Path) -> None:
    def edit(h: dict[str, Any]) -> None:
        t = _tensor(h, "model.norm.weight")
        t["data_offsets"] = [t["data_offsets"][0], t["data_offsets"][1] + 10**6]
    edit_header(p / ST, edit)


def _overlap(p: Path) -> None:
    def edit(h: dict[str, Any]) -> None:
        _tensor(h, "layers.1.input_layernorm.weight")["data_offsets"] = list(
            _tensor(h, "layers.0.input_layernorm.weight")["data_offsets"])
    edit_header(p / ST, edit)


def _set(suffix: str, key: str, value: Any) -> Callable[[Path], None]:
    def mutate(p: Path) -> None:
        edit_header(p / ST, lambda h: _tensor(h, suffix).__setitem__(key, value))
    return mutate


def _offsets_reversed(p: Path) -> None:
    def edit(h: dict[str, Any]) -> None:
        t = _tensor(h, "model.norm.weight")
        t["data_offsets"] = list(reversed(t["data_offsets"]))
    edit_header(p / ST, edit)


def _header_raw(payload: bytes) -> Callable[[Path], None]:
    def mutate(p: Path) -> None:
        _h, data = read_safetensors(p / ST)
        (p / ST).write_bytes(struct.pack("<Q", len(payload)) + payload + data)
    return mutate


def _trailing(p: Path) -> None:
    with open(p / ST, "ab") as fh:
        fh.write(b"\0" * 16)


def _qweight(p: Path) -> None:
    def edit(h: dict[str, Any]) -> None:
        key = next(k for k in h if k.endswith("layers.0.self_attn.q_proj.weight"))
        t = h.pop(key)
        t["dtype"] = "I32"
        h[key.replace(".weight", ".qweight")] = t
    edit_header(p / ST, edit)


def _config(edit: Callable[[dict[str, Any]], None], name: str = "config.json") -> Callable[[Path], None]:
    return lambda p: edit_json(p / name, edit)


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda p: (p / name).write_bytes(content)


def _delete(*names: str) -> Callable[[Path], None]:
    def mutate(p: Path) -> None:
        for n in names:
            (p / n).unlink()
    return mutate


def _symlink_outside(p: Path) -> None:
    outside = p.parent / f"{p.name}-outside-tokenizer.json"
    shutil.copyfile(p / "tokenizer.json", outside)
    (p / "tokenizer.json").unlink()
    (p / "tokenizer.json").symlink_to(outside)


def _index(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    return lambda p: edit_json(p / INDEX, edit)


def _drop_from_index(doc: dict[str, Any]) -> None:
    key = next(k for k, v in doc["weight_map"].items() if v == SHARD2)
    del doc["weight_map"][key]


def _duplicate_across_shards(p: Path) -> None:
    h1, d1 = read_safetensors(p / SHARD1)
    name, t = next((k, v) for k, v in h1.items() if k != "__metadata__")
    chunk = d1[t["data_offsets"][0]:t["data_offsets"][1]]
    h5, d5 = read_safetensors(p / SHARD5)
    h5[name] = {**t, "data_offsets": [len(d5), len(d5) + len(chunk)]}
    write_safetensors(p / SHARD5, h5, d5 + chunk)


def _mixed(p: Path) -> None:
    import torch

    torch.save({"model.norm.weight": torch.ones(4)}, p / "pytorch_model.bin")


def _evil_bare(p: Path) -> None:
    (p / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _RunsShell(sentinel_command())}))


def _evil_zip(p: Path) -> None:
    import torch

    torch.save({"w": _RunsShell(sentinel_command())}, p / "pytorch_model.bin")


def _no_chat_template(p: Path) -> None:
    edit_json(p / "tokenizer_config.json", lambda d: d.pop("chat_template"))


def _bin_shard_in_index(p: Path) -> None:
    (p / SHARD2).rename(p / "pytorch_model-00002-of-00005.bin")
    _index(lambda d: d["weight_map"].update(
        {k: "pytorch_model-00002-of-00005.bin" for k, v in d["weight_map"].items() if v == SHARD2}))(p)


def _added_token_beyond_vocab(p: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d.setdefault("added_tokens", []).append({"id": 384, "content": "<|extra|>", "single_word": False,
                                                 "lstrip": False, "rstrip": False, "normalized": False,
                                                 "special": True})
    edit_json(p / "tokenizer.json", edit)


VARIANTS: list[BrokenVariant] = [
    BrokenVariant("truncated-shard", "llama", "header-offsets-out-of-bounds", ST, _truncate),
    BrokenVariant("header-length-2^60", "llama", "header-length-invalid", ST, _header_len_huge),
    BrokenVariant("offsets-past-end", "llama", "header-offsets-out-of-bounds", ST, _offsets_past_end),
    BrokenVariant("overlapping-tensors", "llama", "header-overlap", ST, _overlap),
    BrokenVariant("unknown-dtype", "llama", "header-unknown-dtype", ST, _set("model.norm.weight", "dtype", "F128")),
    BrokenVariant("negative-shape", "llama", "header-bad-shape", ST, _set("model.norm.weight", "shape", [-64])),
    BrokenVariant("float-shape", "llama", "header-bad-shape", ST, _set("model.norm.weight", "shape", [64.0])),
    BrokenVariant("offsets-end-before-begin", "llama", "header-bad-offsets", ST, _offsets_reversed),
    BrokenVariant("dtype-size-mismatch", "llama", "header-size-mismatch", ST, _set("model.norm.weight", "dtype", "BF16")),
    BrokenVariant("header-not-json", "llama", "header-not-json", ST, _header_raw(b"{not json at all" + b" " * 8)),
    BrokenVariant("header-json-array", "llama", "header-not-object", ST, _header_raw(b"[1, 2, 3]       ")),
    BrokenVariant("trailing-garbage", "llama", "header-file-size", ST, _trailing),
    BrokenVariant("empty-shard", "llama", "empty-file", ST, _write(ST, b"")),
    BrokenVariant("empty-config", "llama", "empty-file", "config.json", _write("config.json", b"")),
    BrokenVariant("config-not-json", "llama", "config-not-json", "config.json", _write("config.json", b"{'model_type': llama")),
    BrokenVariant("config-json-array", "llama", "config-not-json", "config.json", _write("config.json", b"[]")),
    BrokenVariant("missing-config", "llama", "missing-config", "config.json", _delete("config.json")),
    BrokenVariant("missing-weights", "llama", "missing-weights", None, _delete(ST)),
    BrokenVariant("missing-tokenizer", "llama", "missing-tokenizer", "tokenizer.json", _delete("tokenizer.json")),
    BrokenVariant("missing-tokenizer-config", "llama", "missing-tokenizer", "tokenizer_config.json",
                  _delete("tokenizer_config.json")),
    BrokenVariant("tokenizer-json-corrupt", "llama", "tokenizer-unreadable", "tokenizer.json",
                  _write("tokenizer.json", b'{"model": {"type": "Nope"}}')),
    BrokenVariant("no-chat-template", "llama", "no-chat-template", "tokenizer_config.json", _no_chat_template),
    BrokenVariant("gptq-config", "llama", "quantized-user", "config.json",
                  _config(lambda d: d.update(quantization_config={"quant_method": "gptq", "bits": 4}))),
    BrokenVariant("awq-config", "llama", "quantized-user", "config.json",
                  _config(lambda d: d.update(quantization_config={"quant_method": "awq", "bits": 4}))),
    BrokenVariant("bnb-config", "llama", "quantized-user", "config.json",
                  _config(lambda d: d.update(quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True}))),
    BrokenVariant("fp8-on-llama", "llama", "quantized-user", "config.json",
                  _config(lambda d: d.update(quantization_config={"quant_method": "fp8"}))),
    BrokenVariant("packed-qweight-tensor", "llama", "quantized-weights", ST, _qweight),
    BrokenVariant("unsupported-architecture", "llama", "unsupported-architecture", "config.json",
                  _config(lambda d: d.update(model_type="gpt2", architectures=["GPT2LMHeadModel"]))),
    BrokenVariant("auto-map-config", "llama", "remote-code", "config.json",
                  _config(lambda d: d.update(auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"}))),
    BrokenVariant("auto-map-tokenizer", "llama", "remote-code", "tokenizer_config.json",
                  _config(lambda d: d.update(auto_map={"AutoTokenizer": ["tok_x.XTokenizer", None]}),
                          "tokenizer_config.json")),
    BrokenVariant("vocab-mismatch", "llama", "vocab-mismatch", "tokenizer.json", _added_token_beyond_vocab),
    BrokenVariant("config-vocab-too-small", "llama", "shape-mismatch", ST, _config(lambda d: d.update(vocab_size=300))),
    BrokenVariant("kv-heads-disagree", "llama", "shape-mismatch", ST, _config(lambda d: d.update(num_key_value_heads=4))),
    BrokenVariant("intermediate-disagrees", "llama", "shape-mismatch", ST,
                  _config(lambda d: d.update(intermediate_size=256))),
    BrokenVariant("layer-count-disagrees", "llama", "layer-count-mismatch", "config.json",
                  _config(lambda d: d.update(num_hidden_layers=3))),
    BrokenVariant("untied-without-lm-head", "qwen_sharded", "lm-head-missing", "config.json",
                  _config(lambda d: d.update(tie_word_embeddings=False))),
    BrokenVariant("symlink-outside", "llama", "symlink-outside", "tokenizer.json", _symlink_outside),
    BrokenVariant("mixed-weight-formats", "llama", "mixed-weight-formats", "pytorch_model.bin", _mixed),
    BrokenVariant("unsafe-pickle-bare", "llama_bin", "unsafe-pickle", "pytorch_model.bin", _evil_bare),
    BrokenVariant("unsafe-pickle-zip", "llama_bin", "unsafe-pickle", "pytorch_model.bin", _evil_zip),
    BrokenVariant("pickle-garbage", "llama_bin", "pickle-corrupt", "pytorch_model.bin",
                  _write("pytorch_model.bin", b"\x80\x05garbage that is no pickle")),
    BrokenVariant("python-file-and-auto-map", "llama", "remote-code", "config.json",
                  lambda p: (_write("modeling_x.py", b"import os\n")(p), _config(
                      lambda d: d.update(auto_map={"AutoConfig": "modeling_x.XConfig"}))(p))),
    BrokenVariant("index-missing-shard", "qwen_sharded", "index-missing-shard", SHARD2, _delete(SHARD2)),
    BrokenVariant("index-path-traversal", "qwen_sharded", "index-path-outside", INDEX,
                  _index(lambda d: d["weight_map"].update({"model.norm.weight": "../../etc/passwd"}))),
    BrokenVariant("index-tensor-not-in-shard", "qwen_sharded", "index-tensor-not-in-shard", SHARD1,
                  _index(lambda d: d["weight_map"].update({"model.extra.weight": SHARD1}))),
    BrokenVariant("shard-tensor-not-in-index", "qwen_sharded", "shard-tensor-not-in-index", SHARD2,
                  _index(_drop_from_index)),
    BrokenVariant("duplicate-tensor-across-shards", "qwen_sharded", "duplicate-tensor", SHARD5,
                  _duplicate_across_shards),
    BrokenVariant("missing-index", "qwen_sharded", "missing-index", INDEX, _delete(INDEX)),
    BrokenVariant("index-not-json", "qwen_sharded", "index-invalid", INDEX, _write(INDEX, b"{weight_map:")),
    BrokenVariant("bin-shard-in-safetensors-index", "qwen_sharded", "index-bin-shard", INDEX, _bin_shard_in_index),
]


def variant(name: str) -> BrokenVariant:
    return next(v for v in VARIANTS if v.name == name)


def make_broken(good: Path, dest: Path, broken: BrokenVariant) -> Path:
    """Copies the good model ``good`` to ``dest`` and applies the mutation."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(good, dest, symlinks=True)
    broken.mutate(dest)
    return dest
