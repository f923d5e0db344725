"""Sources: gs:// gives the same findings as local while reading only headers;
unreadable sources and bad flags exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import upload_folder
from tune2serve.components.validate import ValidateOptions, validate_checkpoint
from tests.fixtures.broken_models import make_broken, variant


def _codes(report_dict: dict) -> list[tuple[str, str, str | None]]:
    return [(f["severity"], f["code"], f["file"]) for f in report_dict["findings"]]


@pytest.mark.timeout(60)
def test_gcs_matches_local_and_reads_headers_only(tiny_qwen_sharded: Path, gcs_bucket: str) -> None:
    uri = upload_folder(tiny_qwen_sharded, gcs_bucket, "exports/qwen")
    remote = validate_checkpoint(uri)
    local = validate_checkpoint(str(tiny_qwen_sharded))
    assert remote.ok and _codes(remote.to_dict()) == _codes(local.to_dict())
    assert [f.message for f in remote.findings] == [f.message for f in local.findings]
    weights = remote.summary["weight_bytes"]
    tokenizer_and_json = sum(p.stat().st_size for p in tiny_qwen_sharded.glob("*.json"))
    # Headers (8 + N bytes per shard) plus the small JSON files: no tensor data.
    assert remote.summary["bytes_read"] <= tokenizer_and_json + 5 * 4096
    assert remote.summary["bytes_read"] < weights / 10


@pytest.mark.timeout(60)
def test_gcs_broken_checkpoint_same_findings(tiny_qwen_sharded: Path, gcs_bucket: str, tmp_path: Path) -> None:
    broken = make_broken(tiny_qwen_sharded, tmp_path / "b", variant("duplicate-tensor-across-shards"))
    uri = upload_folder(broken, gcs_bucket, "exports/broken")
    remote, local = validate_checkpoint(uri), validate_checkpoint(str(broken))
    assert not remote.ok
    assert _codes(remote.to_dict()) == _codes(local.to_dict())


@pytest.mark.timeout(60)
def test_gcs_bin_is_scanned_with_ranged_reads(tiny_llama_bin: Path, gcs_bucket: str) -> None:
    uri = upload_folder(tiny_llama_bin, gcs_bucket, "exports/bin")
    report = validate_checkpoint(uri)
    assert report.ok
    assert report.summary["bytes_read"] < (tiny_llama_bin / "pytorch_model.bin").stat().st_size


@pytest.mark.timeout(30)
def test_missing_gcs_prefix_exits_2(gcs_bucket: str, run_cli) -> None:
    code, doc, err = run_cli(f"gs://{gcs_bucket}/missing")
    assert code == 2 and doc == {}
    assert f"gs://{gcs_bucket}/missing" in err and "Traceback" not in err


def test_missing_local_folder_exits_2(tmp_path: Path, run_cli) -> None:
    code, doc, err = run_cli(str(tmp_path / "nope"))
    assert code == 2 and doc == {}
    assert "no such folder" in err and "Traceback" not in err


@pytest.mark.parametrize("flags, message", [
    (["--machine-type", "g2-standard-12"], "set together"),
    (["--machine-type", "g2-standard-12", "--accelerator-type", "NVIDIA_H100_80GB", "--accelerator-count", "1"],
     "carries 1 × NVIDIA_L4"),
    (["--machine-type", "a3-highgpu-8g", "--accelerator-type", "NVIDIA_H100_80GB", "--accelerator-count", "2"],
     "carries 8 × NVIDIA_H100_80GB"),
    (["--machine-type", "n1-standard-4", "--accelerator-type", "NVIDIA_L4", "--accelerator-count", "1"],
     "unknown machine type"),
])
def test_bad_machine_spec_is_a_usage_error(flags: list[str], message: str, tiny_llama: Path, run_cli) -> None:
    code, doc, err = run_cli(str(tiny_llama), *flags)
    assert code == 2 and doc == {}
    assert message in err


def test_unsupported_scheme_exits_2(run_cli) -> None:
    code, _doc, err = run_cli("s3://bucket/x")
    assert code == 2 and "unsupported scheme" in err


def test_library_never_raises_for_broken_content(tiny_llama: Path, tmp_path: Path) -> None:
    folder = make_broken(tiny_llama, tmp_path / "b", variant("header-not-json"))
    report = validate_checkpoint(str(folder), ValidateOptions(strict=True))
    assert not report.ok and "header-not-json" in report.codes("error")
