"""The record-promotion step's body (``python_func``), without the stack: it writes the
record beside a real export folder only when the model serves, and a record it cannot
write does not fail the step (record then discover: tests/discover/test_component.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.discover.test_component import _export
from tune2serve.components.promotion_record.component import record_promotion
from tune2serve.components.promotion_record.promotion_record import read_promotion_record


def test_a_promotion_onto_production_records_the_production_endpoint(tmp_path: Path) -> None:
    export = _export(tmp_path / "exports" / "run-1", source="gs://b/tuning/run-1")
    record_promotion.python_func(export_uri=str(export), endpoint="projects/p/locations/r/endpoints/staging",
                                 model="m", run_id="", outcome="promoted", production_endpoint="projects/p/locations/r/endpoints/prod")
    doc = json.loads((tmp_path / "exports" / "run-1.promotion.json").read_text())
    assert (doc["endpoint"], doc["source"], doc["run_id"]) == ("projects/p/locations/r/endpoints/prod", "gs://b/tuning/run-1", None)


def test_no_record_unless_the_model_serves(tmp_path: Path) -> None:
    export = _export(tmp_path / "exports" / "run-1", source="gs://b/tuning/run-1")
    said = record_promotion.python_func(export_uri=str(export), endpoint="e", model="m", run_id="r", outcome="rolled_back")
    assert said == "not recorded: outcome 'rolled_back' is not a promotion (expected one of promoted, verified)"
    assert read_promotion_record(str(export)) is None


def test_a_record_that_cannot_be_written_does_not_fail_the_step(tmp_path: Path) -> None:
    """The promotion happened; failing here would make finalize undo it. The step warns."""
    (tmp_path / "exports").write_text("a file where the exports folder should be")
    export = tmp_path / "exports" / "run-1"
    said = record_promotion.python_func(export_uri=str(export), endpoint="e", model="m", run_id="r", outcome="verified")
    assert said.startswith(f"not recorded: {export}.promotion.json: cannot write")
    assert "the next scheduled run may promote this export again" in said
