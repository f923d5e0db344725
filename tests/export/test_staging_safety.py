"""Export deletes and overwrites only what it provably wrote: a user's files in
DEST/_staging/, a forged state file, files at DEST that a state file claims but that
do not match it — each stops the export with exit 1, naming the file, all left intact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tune2serve.components.export.publish.upload import WRITER

from tests.export.conftest import make_adapter


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_user_files_in_staging_are_never_deleted(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    dest = tmp_path / "dest"
    (dest / "_staging" / "notes").mkdir(parents=True)
    (dest / "_staging" / "notes" / "thesis.tex").write_text("years of work")
    (dest / "_staging" / "model.safetensors.partial").write_text("not ours either")
    before = _snapshot(dest)

    code, _, err = cli("export", tiny_llama, dest)

    assert code == 1
    assert "_staging/" in err and "was not written by tune2serve export" in err and "nothing was deleted" in err
    assert _snapshot(dest) == before


def test_state_file_without_the_claim_is_foreign(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    dest = tmp_path / "dest"
    (dest / "_staging").mkdir(parents=True)
    (dest / "config.json").write_text('{"mine": true}')
    (dest / "_staging" / "state.json").write_text(json.dumps({"digest": "x", "files": {"config.json": {"size": 14, "sha256": "0"}}}))
    before = _snapshot(dest)

    code, _, err = cli("export", tiny_llama, dest)

    assert code == 1 and "state.json" in err
    assert _snapshot(dest) == before


def test_forged_claim_cannot_open_a_non_empty_folder(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    dest = tmp_path / "dest"
    (dest / "_staging").mkdir(parents=True)
    (dest / "config.json").write_text('{"mine": true}')
    forged = {"writer": WRITER, "digest": "forged", "files": {"config.json": {"size": 14, "sha256": "0" * 64}}}
    (dest / "_staging" / "state.json").write_text(json.dumps(forged))
    before = _snapshot(dest)

    code, _, err = cli("export", tiny_llama, dest)

    assert code == 1 and "config.json" in err and "nothing was deleted" in err
    assert _snapshot(dest) == before


def test_failed_export_removes_only_its_own_staging(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    """A merge that fails while writing leaves DEST as it found it (here: absent)."""
    adapter = make_adapter(tiny_llama, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["r"] = 0
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))

    code, _, err = cli("export", adapter, tmp_path / "dest", "--base-model", tiny_llama)

    assert code == 1 and "r = 0 must be a positive integer" in err
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").rglob("*"))


def test_a_clean_export_still_commits_and_reruns_as_noop(tiny_llama: Path, tmp_path: Path, cli: Any) -> None:
    dest = tmp_path / "dest"
    assert cli("export", tiny_llama, dest)[0] == 0
    assert not (dest / "_staging").exists()
    assert cli("export", tiny_llama, dest)[0] == 0
