"""Source references: tuning job names, and a clear error when Vertex is unreachable."""

from __future__ import annotations

from typing import Any

import pytest

from tune2serve.components.export.source.sources import TuningJobName
from tune2serve.localstack.ports import free_port


def test_tuning_job_name_parses_and_round_trips() -> None:
    name = TuningJobName.parse("projects/p-1/locations/us-central1/tuningJobs/123")
    assert name == TuningJobName("p-1", "us-central1", "123")
    assert str(name) == "projects/p-1/locations/us-central1/tuningJobs/123"
    assert TuningJobName.parse("gs://bucket/projects/p/locations/l/tuningJobs/1") is None
    assert TuningJobName.parse("projects/p/locations/l/endpoints/1") is None


def test_unreachable_vertex_is_a_clear_error(tmp_path: Any, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNE2SERVE_VERTEX_API_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    code, _, err = cli("export", "projects/p/locations/us-central1/tuningJobs/42", tmp_path / "dest")
    assert code == 1
    assert "projects/p/locations/us-central1/tuningJobs/42" in err and "Traceback" not in err
    assert not (tmp_path / "dest").exists()
