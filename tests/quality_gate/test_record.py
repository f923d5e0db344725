"""The promotion record keeps what the quality gate said: its verdict, the eval set's
sha256 and the judge — through the record-promotion step's body, on a local folder
(the storage layer's gs:// path is tests/promotion_record/'s)."""

from __future__ import annotations

import json
from pathlib import Path

from tune2serve.components.promotion_record.component import record_promotion
from tune2serve.components.promotion_record.promotion_record import read_promotion_record

DIGEST = "ab" * 32


def test_the_record_names_verdict_eval_set_and_judge(tmp_path: Path) -> None:
    export = tmp_path / "exports" / "run-1"
    export.mkdir(parents=True)
    out = record_promotion.python_func(export_uri=str(export), endpoint="projects/p/locations/r/endpoints/1",
                                       model="projects/p/locations/r/models/2", run_id="run-1", outcome="promoted",
                                       quality_verdict="promote", eval_set_sha256=DIGEST,
                                       judge="endpoint projects/p/locations/r/endpoints/9 (model j)")
    assert out.endswith("run-1.promotion.json")
    record = read_promotion_record(str(export))
    assert record is not None and record.quality_gate == {
        "verdict": "promote", "eval_set_sha256": DIGEST, "judge": "endpoint projects/p/locations/r/endpoints/9 (model j)"}
    assert json.loads((tmp_path / "exports" / "run-1.promotion.json").read_text())["quality_gate"]["verdict"] == "promote"


def test_no_eval_set_records_no_quality_gate(tmp_path: Path) -> None:
    export = tmp_path / "run-2"
    export.mkdir()
    record_promotion.python_func(export_uri=str(export), endpoint="e", model="m", run_id="", outcome="verified")
    record = read_promotion_record(str(export))
    assert record is not None and record.quality_gate is None
