"""The compiled export sub-pipeline (plan → ParallelFor worker → commit) run by kfp.local
against fake-gcs-server: several workers, and the same bytes as the single-worker export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import upload_folder
from tests.export.conftest import make_adapter


def _blobs(bucket: str, prefix: str) -> dict[str, bytes]:
    from tune2serve.components.checkpoint.storage import storage_client

    return {b.name[len(prefix) + 1:]: b.download_as_bytes()
            for b in storage_client().list_blobs(bucket, prefix=prefix + "/")}


@pytest.mark.slow
def test_export_dag_fans_out_and_equals_the_single_worker_export(
        tiny_qwen_sharded: Path, gcs_bucket: str, fake_gcs_url: str, tmp_path: Path) -> None:
    from tune2serve.components.export.export import export_checkpoint
    from tune2serve.pipelines.kfp_local import run_pipeline
    from tune2serve.pipelines.promote import export_fanout

    adapter = make_adapter(tiny_qwen_sharded, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"])
    base = upload_folder(tiny_qwen_sharded, gcs_bucket, "bases/qwen")
    source = upload_folder(adapter, gcs_bucket, "runs/1")
    export_checkpoint(source, f"gs://{gcs_bucket}/single", base_model=base, max_shard_size="60KB")
    arguments: dict[str, Any] = {
        "source": source, "dest": f"gs://{gcs_bucket}/fanout", "base_model": base, "checkpoint": "final",
        "dtype": "auto", "max_shard_size": "60KB", "export_workers": 3, "export_min_worker_size": "1",
        "export_cpu": "8", "export_memory": "32G", "export_machine_type": "", "export_boot_disk_size_gb": 100,
        "export_service_account": "",
    }
    run = run_pipeline(export_fanout.pipeline_spec, arguments, pipeline_root=tmp_path / "root",
                       env={"STORAGE_EMULATOR_HOST": fake_gcs_url})
    assert run.succeeded, run.log_path.read_text()[-3000:]
    assert [s.task for s in run.steps] == ["export-plan", "export-worker", "export-commit"]
    log = run.log_path.read_text()
    assert log.count("Executing task 'export-worker'") + log.count("Executing task \x1b[96m'export-worker'") == 3
    assert _blobs(gcs_bucket, "fanout") == _blobs(gcs_bucket, "single")
