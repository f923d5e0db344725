"""Inside the pipeline deploy reuses validate's result instead of validating twice — only
for the very files validated (their identity, checkpoint/identity.py) and the same
machine spec; a folder rewritten since, or another spec, is validated again, so a stale
pass never deploys what it did not check. On fake-gcs-server through the real client."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import upload_folder
from tune2serve.components.checkpoint.identity import folder_identity
from tune2serve.components.checkpoint.storage import open_folder
from tune2serve.components.deploy.preflight import check_export, reuses
from tune2serve.components.deploy.request import Validated
from tune2serve.components.errors import ValidationFailedError
from tune2serve.components.validate import ValidateOptions, validate_checkpoint
from tune2serve.components.vertex.machine_spec import MachineSpec

L4 = MachineSpec("g2-standard-12", "NVIDIA_L4", 1)


class _Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(getattr(record, "event", ""))


@pytest.fixture
def events() -> Iterator[list[str]]:
    """The structured events deploy's preflight logs."""
    logger, handler = logging.getLogger("tune2serve.deploy.preflight"), _Events()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _validated(uri: str, spec: MachineSpec | None = None) -> Validated:
    """What the pipeline hands deploy: validate's summary, as the component's JSON."""
    report = validate_checkpoint(uri, ValidateOptions(machine_spec=spec))
    assert report.ok, report.findings
    found = Validated.from_summary(json.dumps(report.summary, default=str))
    assert found is not None
    return found


def test_validate_reports_the_identity_deploy_uses(tiny_llama: Path, gcs_bucket: str) -> None:
    uri = upload_folder(tiny_llama, gcs_bucket, "plain")
    summary = validate_checkpoint(uri).summary
    expected = folder_identity(open_folder(uri))
    assert summary["identity"] == {"basis": expected.basis, "digest": expected.digest}
    assert validate_checkpoint(str(tiny_llama)).summary["identity"] is None  # a local listing has no content identity


def test_the_same_files_are_not_validated_again(tiny_llama: Path, gcs_bucket: str, events: list[str]) -> None:
    uri = upload_folder(tiny_llama, gcs_bucket, "same")
    validated = _validated(uri, L4)
    checked = check_export(uri, L4, validated)
    assert "deploy.validation_reused" in events and "deploy.revalidating" not in events
    assert checked.serving_bytes == validated.serving_bytes and checked.serving_bytes


def test_a_folder_rewritten_after_validate_is_validated_again(tiny_llama: Path, gcs_bucket: str,
                                                              events: list[str], tmp_path: Path) -> None:
    uri = upload_folder(tiny_llama, gcs_bucket, "rewritten")
    validated = _validated(uri)
    config = json.loads((tiny_llama / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}  # remote code: refused
    (tmp_path / "config.json").write_text(json.dumps(config))
    upload_folder(tmp_path, gcs_bucket, "rewritten")
    with pytest.raises(ValidationFailedError, match="remote code|auto_map"):
        check_export(uri, None, validated)
    assert events[-1:] == ["deploy.revalidating"] and "deploy.validation_reused" not in events


def test_another_machine_spec_is_validated_again(tiny_llama: Path, gcs_bucket: str, events: list[str]) -> None:
    uri = upload_folder(tiny_llama, gcs_bucket, "spec")
    checked = check_export(uri, L4, _validated(uri))  # validated without a spec: its memory was not checked
    assert events.count("deploy.revalidating") == 1 and "deploy.preflight_ok" in events
    assert checked.serving_bytes


_IDENTITIES = st.fixed_dictionaries({"basis": st.sampled_from(["manifest", "listing"]),
                                     "digest": st.sampled_from(["a" * 64, "b" * 64])})
_SPECS = st.one_of(st.none(), st.sampled_from([L4, MachineSpec("a2-highgpu-1g", "NVIDIA_TESLA_A100", 1)]))


@settings(max_examples=200, deadline=None)
@given(summary=st.one_of(st.text(max_size=40), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
        st.sampled_from(["identity", "machine_spec", "serving_memory_bytes", "x"]), inner, max_size=4)),
    max_leaves=12).map(json.dumps)))
def test_any_summary_text_reads_as_a_result_or_none(summary: str) -> None:
    """A summary is the pipeline's data, not trusted code: whatever it holds, reading it
    never raises, and what does not parse is no result (deploy then validates)."""
    found = Validated.from_summary(summary)
    assert found is None or isinstance(found, Validated)


@settings(max_examples=200, deadline=None)
@given(validated_identity=st.one_of(st.none(), _IDENTITIES), deployed=_IDENTITIES, validated_spec=_SPECS,
       deployed_spec=_SPECS)
def test_reuse_needs_the_same_files_and_the_same_spec(validated_identity: dict[str, str] | None,
                                                      deployed: dict[str, str], validated_spec: MachineSpec | None,
                                                      deployed_spec: MachineSpec | None) -> None:
    from tune2serve.components.checkpoint.identity import FolderIdentity

    validated = Validated(validated_identity, validated_spec.to_dict() if validated_spec else None, 1)
    why_not = reuses(validated, FolderIdentity(deployed["digest"], deployed["basis"], 3), deployed_spec)
    assert (why_not is None) == (validated_identity == deployed and validated_spec == deployed_spec)
