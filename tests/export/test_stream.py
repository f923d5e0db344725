"""The streaming paths at sizes small enough to exercise every boundary: tensors split
over many chunks, merges over many row blocks, shards written in many direct (O_DIRECT)
blocks plus an unaligned tail. The bytes must be identical to the export made with the
default sizes (one chunk, one block per tiny tensor), and equal PEFT's merge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.export.conftest import assert_matches, make_adapter, peft_merged, read_export
from tune2serve.components.export.publish import shard_file as shard_file_module
from tune2serve.components.export.merge import stream as stream_module
from tune2serve.components.export.export import export_checkpoint

ALL_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "CHUNK_BYTES", 1000)      # not a multiple of any row
    monkeypatch.setattr(stream_module, "POOL_COUNT", 3)
    monkeypatch.setattr(stream_module, "BLOCK_ELEMENTS", 50)     # a few rows per merge block
    monkeypatch.setattr(shard_file_module, "BLOCK", 4096)        # the smallest O_DIRECT unit
    monkeypatch.setattr(shard_file_module, "PIECE", 1000)        # pieces straddle blocks


def _direct_io_possible(folder: Path) -> bool:
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except (OSError, AttributeError):
        return False
    os.close(fd)
    (folder / "probe").unlink()
    return True


@pytest.mark.parametrize("lora", [
    dict(r=8, lora_alpha=16, target_modules=ALL_PROJ),
    dict(r=4, lora_alpha=8, use_dora=True, target_modules=["embed_tokens", "q_proj", "down_proj"]),
], ids=["lora", "dora+embedding"])
def test_chunked_streaming_is_byte_identical(tiny_llama_bf16: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             lora: dict) -> None:
    adapter = make_adapter(tiny_llama_bf16, tmp_path / "adapter", **lora)
    default = export_checkpoint(str(adapter), str(tmp_path / "default"), max_shard_size="100KB")
    _tiny_sizes(monkeypatch)
    modes: list[bool] = []
    real_close = shard_file_module.ShardFile.close
    monkeypatch.setattr(shard_file_module.ShardFile, "close",
                        lambda self, fsync: (modes.append(self.direct), real_close(self, fsync))[1])
    chunked = export_checkpoint(str(adapter), str(tmp_path / "chunked"), max_shard_size="100KB")
    assert modes and all(modes) == _direct_io_possible(tmp_path)  # O_DIRECT where the filesystem has it
    assert [(f["name"], f["sha256"]) for f in chunked.files] == [(f["name"], f["sha256"]) for f in default.files]
    assert len([f for f in chunked.files if f["name"].endswith(".safetensors")]) > 1
    assert_matches(read_export(tmp_path / "chunked"), peft_merged(tiny_llama_bf16, adapter), tied=False,
                   atol=1e-3, rtol=2 ** -7)


def test_each_tensor_takes_the_cheapest_exact_path(tiny_llama_bf16: Path, tmp_path: Path) -> None:
    """Untouched tensors are copied as bytes, LoRA targets merged row block by row block,
    per-column DoRA (an embedding's) built whole."""
    from tune2serve.components.checkpoint.tensor_reader import CheckpointTensors
    from tune2serve.components.export.merge.merge import plan_adapter, read_adapter
    from tune2serve.components.export.plan.plan import plan_output
    from tune2serve.components.export.merge.stream import TensorStream

    adapter = make_adapter(tiny_llama_bf16, tmp_path / "adapter", r=4, lora_alpha=8, use_dora=True,
                           target_modules=["embed_tokens", "q_proj"])
    tensors = CheckpointTensors.open(tiny_llama_bf16)
    options, adapter_tensors = read_adapter(adapter, str(adapter))
    plan = plan_adapter(options, adapter_tensors, tensors.metas, str(adapter))
    config = json.loads((tiny_llama_bf16 / "config.json").read_text())
    out = plan_output(tensors.metas, config, "bfloat16", plan, str(adapter))
    stream = TensorStream(tensors, plan, "BF16")
    kinds = {t.name: stream.kind(t) for t in out.tensors}
    tensors.close()
    assert kinds["model.embed_tokens.weight"] == "whole"
    assert {n for n, k in kinds.items() if k == "rows"} == {n for n in kinds if n.endswith("q_proj.weight")}
    assert {n for n, k in kinds.items() if k == "raw"} == {n for n in kinds if n != "model.embed_tokens.weight"
                                                           and not n.endswith("q_proj.weight")}


def test_without_direct_io_the_bytes_are_the_same(tiny_llama_bf16: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The page-cache fallback (filesystems that refuse O_DIRECT) writes the same files."""
    adapter = make_adapter(tiny_llama_bf16, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=ALL_PROJ)
    _tiny_sizes(monkeypatch)
    direct = export_checkpoint(str(adapter), str(tmp_path / "direct"), max_shard_size="100KB")
    real_init = shard_file_module.ShardFile.__init__

    def through_cache(self: object, path: Path, on_piece: object, spans: object, direct: bool = True) -> None:
        real_init(self, path, on_piece, spans, direct=False)

    monkeypatch.setattr(shard_file_module.ShardFile, "__init__", through_cache)
    cached = export_checkpoint(str(adapter), str(tmp_path / "cached"), max_shard_size="100KB")
    assert [(f["name"], f["sha256"]) for f in cached.files] == [(f["name"], f["sha256"]) for f in direct.files]
