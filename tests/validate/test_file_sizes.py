"""A config file far larger than any real one is refused from the listing, by its own cap
(the 60 MB "config.json" that once took validate 16 s)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tune2serve.components.validate import ValidateOptions, validate_checkpoint


def test_a_huge_config_is_refused_by_its_cap_without_reading_it(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_llama, folder)
    with open(folder / "config.json", "r+b") as f:
        f.truncate(60 * 1024 * 1024)  # sparse: a read of it would show in the time, not the disk
    report = validate_checkpoint(str(folder), ValidateOptions())
    errors = [(f.code, f.file, f.message) for f in report.findings if f.severity == "error"]
    assert ("config-not-json", "config.json",
            "config.json is above the 1048576-byte limit for this file: it is not a real configuration file") in errors
