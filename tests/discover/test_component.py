"""The discover step's body (``python_func``), without the stack: its pass-through and
no-op verdicts, and what it makes of a promotion record that record_promotion wrote
beside a real export folder (the record step alone: tests/promotion_record/)."""

from __future__ import annotations

import os
from pathlib import Path

from tune2serve.components.checkpoint.manifest import MANIFEST_NAME, Manifest, ManifestEntry
from tune2serve.components.discover.component import discover
from tune2serve.components.promotion_record.component import record_promotion
from tune2serve.components.promotion_record.promotion_record import read_promotion_record

FINAL = {"config.json": "{}", "model.safetensors": "x"}
TRAINING = {"checkpoint-5/adapter_config.json": "{}", "checkpoint-5/adapter_model.safetensors": "x"}


def _write(root: Path, files: dict[str, str], mtime: float = 1000.0) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (mtime, mtime))
    return root


def _export(folder: Path, source: str) -> Path:
    """An export folder as export leaves it: files plus the manifest that lists them."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    manifest = Manifest(files=[ManifestEntry("config.json", 2, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")],
                        source=source)
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    return folder


def test_a_plain_source_passes_through(tmp_path: Path) -> None:
    out = discover.python_func(source="gs://bucket/tuning/run-3", export_dest="gs://bucket/exports/x")
    assert tuple(out) == (True, "gs://bucket/tuning/run-3", "gs://bucket/exports/x", "promoting gs://bucket/tuning/run-3")
    assert out._fields == ("proceed", "source", "export_dest", "reason")


def test_newest_resolves_the_newest_completed_run_and_its_export(tmp_path: Path) -> None:
    _write(tmp_path / "tuning" / "run-1", FINAL, 1000)
    _write(tmp_path / "tuning" / "run-2", FINAL, 2000)
    _write(tmp_path / "tuning" / "run-3", TRAINING, 3000)  # newer, but still training
    out = discover.python_func(source=f"newest:{tmp_path}/tuning/", export_dest=f"{tmp_path}/exports/")
    assert out.proceed is True
    assert (out.source, out.export_dest) == (f"{tmp_path}/tuning/run-2", f"{tmp_path}/exports/run-2")
    assert out.reason == f"promoting {tmp_path}/tuning/run-2, the newest completed tuning output under {tmp_path}/tuning"


def test_nothing_completed_is_a_no_op_that_says_why(tmp_path: Path) -> None:
    _write(tmp_path / "tuning" / "run-1", TRAINING)
    out = discover.python_func(source=f"newest:{tmp_path}/tuning", export_dest=f"{tmp_path}/exports")
    assert tuple(out) == (False, "", f"{tmp_path}/exports", f"nothing to do: no completed tuning output under {tmp_path}/tuning")


def test_record_then_discover_says_already_promoted(tmp_path: Path) -> None:
    run = _write(tmp_path / "tuning" / "run-1", FINAL)
    exports = tmp_path / "exports"
    export = _export(exports / "run-1", source=str(run))
    said = record_promotion.python_func(export_uri=str(export), endpoint="projects/p/locations/r/endpoints/1",
                                        model="projects/p/locations/r/models/2", run_id="run-abc", outcome="verified")
    assert said == f"{exports}/run-1.promotion.json"
    record = read_promotion_record(str(export))
    assert record is not None
    assert (record.source, record.export, record.endpoint, record.model, record.run_id) == (
        str(run), str(export), "projects/p/locations/r/endpoints/1", "projects/p/locations/r/models/2", "run-abc")
    assert sorted(p.name for p in export.iterdir()) == ["config.json", MANIFEST_NAME]  # beside, not inside
    out = discover.python_func(source=f"newest:{tmp_path}/tuning", export_dest=str(exports))
    assert (out.proceed, out.source, out.export_dest) == (False, str(run), f"{exports}/run-1")
    assert out.reason.startswith(f"nothing to do: {run} was already promoted (export {export}, "
                                 "endpoint projects/p/locations/r/endpoints/1, at ")


def test_a_source_promoted_as_it_is_records_itself_and_is_not_promoted_again(tmp_path: Path) -> None:
    """Export passed a deployable folder through (no manifest, export_uri = the source):
    the record beside the source names it, and the next scheduled run finds it there."""
    run = _write(tmp_path / "tuning" / "run-1", FINAL)
    said = record_promotion.python_func(export_uri=str(run), endpoint="projects/p/locations/r/endpoints/1",
                                        model="m", run_id="", outcome="promoted")
    assert said == f"{tmp_path}/tuning/run-1.promotion.json"
    record = read_promotion_record(str(run))
    assert record is not None and (record.source, record.export, record.manifest_digest) == (str(run), str(run), None)
    out = discover.python_func(source=f"newest:{tmp_path}/tuning", export_dest=f"{tmp_path}/exports")
    assert (out.proceed, out.source) == (False, str(run))
    assert out.reason.startswith(f"nothing to do: {run} was already promoted (export {run}, ")


def test_an_unreadable_record_beside_the_source_proves_nothing(tmp_path: Path) -> None:
    run = _write(tmp_path / "tuning" / "run-1", FINAL)
    (tmp_path / "tuning" / "run-1.promotion.json").write_text("{not json")
    out = discover.python_func(source=f"newest:{tmp_path}/tuning", export_dest=f"{tmp_path}/exports")
    assert (out.proceed, out.source) == (True, str(run))
