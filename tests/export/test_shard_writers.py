"""Shards written side by side (``export._write_shards``): the same bytes as one at a
time, a failure in one writer stops the others and publishes nothing, and an interrupt
leaves only whole shards, which a rerun reuses."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import assert_nothing_published, interrupt_writes, make_adapter
from tune2serve.components.export import export as export_module

SHARD = "100KB"  # tiny_llama in a dozen shards


@pytest.fixture(scope="module")
def adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_llama, tmp_path_factory.mktemp("writers") / "a", r=4, lora_alpha=8,
                        target_modules=["q_proj", "v_proj", "down_proj"])


def _writers(monkeypatch: pytest.MonkeyPatch, count: int) -> list[int]:
    """Forces ``count`` writers; returns the list of counts the export asked for."""
    real, asked = export_module._shard_writers, []

    def forced(*args: Any) -> int:
        asked.append(real(*args))
        return min(count, args[-1]) if args[-1] else 1

    monkeypatch.setattr(export_module, "_shard_writers", forced)
    return asked


def _files(dest: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(dest.iterdir()) if p.is_file()}


def _no_writer_left() -> bool:
    return not any(t.name.startswith("export-shard") for t in threading.enumerate())


def test_side_by_side_writes_the_bytes_of_one_at_a_time(adapter: Path, tiny_llama: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _writers(monkeypatch, 1)
    one = export_module.export_checkpoint(str(adapter), str(tmp_path / "one"), base_model=str(tiny_llama),
                                          max_shard_size=SHARD)
    _writers(monkeypatch, 4)
    four = export_module.export_checkpoint(str(adapter), str(tmp_path / "four"), base_model=str(tiny_llama),
                                           max_shard_size=SHARD)
    shards = [f for f in _files(tmp_path / "one") if f.endswith(".safetensors")]
    assert len(shards) >= 6 and one.noop is False and four.noop is False
    assert _files(tmp_path / "one") == _files(tmp_path / "four")  # shards, index, config, tokenizer, manifest
    assert _no_writer_left()


def test_a_local_safetensors_base_gets_a_writer_per_core(adapter: Path, tiny_llama: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv(export_module.WRITERS_ENV, raising=False)
    asked = _writers(monkeypatch, 1)
    export_module.export_checkpoint(str(adapter), str(tmp_path / "out"), base_model=str(tiny_llama), max_shard_size=SHARD)
    shards = sum(1 for p in (tmp_path / "out").iterdir() if p.name.endswith(".safetensors"))
    assert asked == [min(shards, export_module.MAX_SHARD_WRITERS, len(os.sched_getaffinity(0)))]

    monkeypatch.setenv(export_module.WRITERS_ENV, "1")
    export_module.export_checkpoint(str(adapter), str(tmp_path / "one"), base_model=str(tiny_llama), max_shard_size=SHARD)
    assert asked[-1] == 1


@pytest.mark.parametrize("value", ["0", "65", "two", "1.5", "-1", "\u0661"])
def test_a_bad_writer_count_is_a_usage_error_naming_the_variable(value: str, adapter: Path, tiny_llama: Path,
                                                                  tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(export_module.WRITERS_ENV, value)
    code, _, err = cli("export", adapter, tmp_path / "dest", "--base-model", tiny_llama, "--max-shard-size", SHARD)
    assert code == 2 and export_module.WRITERS_ENV in err and "Traceback" not in err, err
    assert_nothing_published(tmp_path / "dest")


def test_a_failing_shard_stops_the_other_writers_and_publishes_nothing(adapter: Path, tiny_llama: Path, tmp_path: Path,
                                                                        cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    poisoned = tmp_path / "poisoned"
    shutil.copytree(adapter, poisoned)
    tensors = load_file(poisoned / "adapter_model.safetensors")
    last = max((n for n in tensors if "lora_B" in n and "down_proj" in n), key=lambda n: int(n.split(".layers.")[1].split(".")[0]))
    tensors[last][0, :] = float("nan")  # the last layer's down_proj: in a late shard, while others are written
    save_file(tensors, poisoned / "adapter_model.safetensors", metadata={"format": "pt"})
    _writers(monkeypatch, 4)

    code, _, err = cli("export", poisoned, tmp_path / "dest", "--base-model", tiny_llama, "--max-shard-size", SHARD)

    assert code == 1, err
    assert "non-finite" in err and "down_proj.weight" in err and "Traceback" not in err
    assert "another shard writer" not in err  # the stopped writers' signal is never the message
    assert_nothing_published(tmp_path / "dest")
    assert _no_writer_left()


def test_an_interrupt_leaves_whole_shards_that_a_rerun_reuses(tiny_llama: Path, tmp_path: Path, cli: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while writers run side by side: the writers stop, exit 130, no manifest;
    what staging keeps are whole shards (the rerun's checks reuse each), and the rerun
    writes exactly the others and ends with the uninterrupted export's files."""
    real = export_module.write_shard
    calls = interrupt_writes(monkeypatch, at=4)
    _writers(monkeypatch, 2)
    dest = tmp_path / "export"
    code, _, err = cli("export", tiny_llama, dest, "--max-shard-size", SHARD)
    assert code == 130 and not (dest / "manifest.json").exists(), err
    assert _no_writer_left()
    kept = sorted(p.name for p in (dest / "_staging").iterdir() if p.name.endswith(".safetensors"))
    assert kept and set(kept) <= set(calls[:3])

    calls.clear()
    monkeypatch.setattr(export_module, "write_shard", lambda *a, **k: (calls.append(a[1].name), real(*a, **k))[1])
    code, doc, err = cli("export", tiny_llama, dest, "--max-shard-size", SHARD, "--json")
    assert code == 0, err
    shards = sorted(f["name"] for f in doc["files"] if f["name"].endswith(".safetensors"))
    assert sorted(calls) == sorted(set(shards) - set(kept))  # the kept ones were reused, the rest written
    code, _, err = cli("export", tiny_llama, tmp_path / "uninterrupted", "--max-shard-size", SHARD)
    assert code == 0, err
    assert _files(dest) == _files(tmp_path / "uninterrupted")
