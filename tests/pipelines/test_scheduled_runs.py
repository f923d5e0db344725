"""Scheduled-style runs of the real pipeline under kfp.local on the local stack
(fake-gcs-server, the local Vertex server, `transformers serve`), through the main job,
with ``source=newest:gs://BUCKET/<prefix>/tuning`` as ``tune2serve schedule create
--source-prefix`` sets it. One module-scoped story, one promotion in all:
1. the prefix holds only a run still training: a successful no-op that says why;
2. a completed run appears: it is exported, deployed, verified, and the promotion
   record is written beside the export;
3. the schedule fires again: a successful no-op, "already promoted", nothing new.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.stack]

NO_OP_STEPS = ["discover", "skip", "finalize"]


@pytest.fixture(scope="module")
def prefix(local_stack: Any) -> str:
    """A prefix of the stack's bucket of this module's own (the bucket is session-wide)."""
    return f"gs://{local_stack.bucket}/sched-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def story(local_stack: Any) -> Iterator[dict[str, Any]]:
    """What the tests hand each other; at the end, the one endpoint the story deployed is
    undeployed and deleted, so its model server does not load the shared machine."""
    told: dict[str, Any] = {}
    yield told
    if told.get("endpoint"):
        from google.cloud import aiplatform

        from tests.pipelines.test_e2e import vertex
        from tune2serve.components.vertex.clients import init_sdk
        from tune2serve.pipelines.kfp_local import environment

        with environment(local_stack.env):
            init_sdk(vertex(local_stack))
            endpoint = aiplatform.Endpoint(told["endpoint"])
            endpoint.undeploy_all()
            endpoint.delete()
            aiplatform.Model(told["model"]).delete()


def run_scheduled(local_stack: Any, prefix: str) -> Any:
    """One run with the parameters a schedule made by `--source-prefix PREFIX/tuning
    --param export_dest=PREFIX/exports` submits every time it fires."""
    from tune2serve.pipelines.main_job import JobOptions, run_job

    opts = JobOptions(source=f"newest:{prefix}/tuning", export_dest=f"{prefix}/exports", home=str(local_stack.home))
    return run_job(opts)


def counts(local_stack: Any) -> tuple[int, int]:
    """(endpoints, models) on the stack, listed with the real SDK."""
    from google.cloud import aiplatform

    from tests.pipelines.test_e2e import vertex
    from tune2serve.components.vertex.clients import init_sdk

    init_sdk(vertex(local_stack))
    return len(aiplatform.Endpoint.list()), len(aiplatform.Model.list())


def steps_run(result: Any) -> list[str]:
    """The pipeline's tasks that ran, in order (the timings also hold the job's phases)."""
    tasks = {"discover", "skip", "export-plan", "export-worker", "export-commit", "validate", "deploy", "smoke-test",
             "verify-traffic", "record-promotion", "reject", "finalize"}
    return [name for name in result.timings if name in tasks]


def test_no_completed_output_is_a_quick_successful_no_op(stack_env: Any, local_stack: Any, prefix: str,
                                                         story: dict[str, Any], tmp_path: Path) -> None:
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.pipelines.main_job import summary_text

    training = tmp_path / "run-0"
    (training / "checkpoint-5").mkdir(parents=True)
    (training / "checkpoint-5" / "adapter_config.json").write_text("{}")
    (training / "checkpoint-5" / "adapter_model.safetensors").write_bytes(b"not yet final")
    local_stack.upload(training, f"{prefix.split('/', 3)[3]}/tuning/run-0")
    before = counts(local_stack)

    result = run_scheduled(local_stack, prefix)

    reason = f"nothing to do: no completed tuning output under {prefix}/tuning"
    assert result.ok and result.outcome == "skipped"
    assert result.message == reason
    assert steps_run(result) == NO_OP_STEPS  # no export, nothing deployed: the quick path
    assert reason in Path(result.log).read_text()  # the no-op step says why in the run's log
    assert f"run {result.run_name}: {reason}" in summary_text(result)
    assert counts(local_stack) == before
    assert not open_folder(f"{prefix}/exports").exists()


def promote_completed_run(local_stack: Any, prefix: str, story: dict[str, Any],
                          tmp_path: Path) -> tuple[Any, str, tuple[int, int]]:
    """Step 2 of the story, once per module: a completed run appears under the prefix and
    the schedule fires. Returns (the job's result, the run's URI, the counts before);
    the rerun test calls it too when it runs on its own."""
    from tune2serve.demo.tiny_models import make_tiny_model

    # an HF Trainer output whose final save_model wrote full weights at the run root, beside
    # save_state's trainer_state.json (training state: export copies, not passes through)
    run = make_tiny_model(tmp_path / "run-1")
    (run / "trainer_state.json").write_text('{"global_step": 5, "log_history": []}')
    done = local_stack.upload(run, f"{prefix.split('/', 3)[3]}/tuning/run-1")
    before = counts(local_stack)
    result = run_scheduled(local_stack, prefix)
    if result.ok:
        story.update(endpoint=result.endpoint, model=result.model)
    return result, done, before


def test_completed_output_is_promoted_and_recorded(stack_env: Any, local_stack: Any, prefix: str,
                                                   story: dict[str, Any], tmp_path: Path) -> None:
    from tune2serve.components.checkpoint.manifest import read_manifest
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.promotion_record.promotion_record import read_promotion_record

    result, done, before = promote_completed_run(local_stack, prefix, story, tmp_path)

    assert result.ok, result.message
    assert result.outcome == "verified"
    assert steps_run(result) == ["discover", "export-plan", "export-worker", "export-commit", "validate", "deploy",
                                 "smoke-test", "verify-traffic", "record-promotion", "finalize"]
    assert counts(local_stack) == (before[0] + 1, before[1] + 1)
    export = f"{prefix}/exports/run-1"  # export_dest/<tuning run folder>
    record = read_promotion_record(export)
    assert record is not None, f"no {export}.promotion.json"
    assert (record.source, record.export, record.endpoint, record.model, record.run_id) == (
        done, export, result.endpoint, result.model, result.run_name)
    manifest = read_manifest(open_folder(export))
    assert manifest is not None and record.manifest_digest == manifest.digest()
    assert "run-1.promotion.json" not in {o.name for o in open_folder(export).list()}  # beside, not inside


def test_rerun_is_an_already_promoted_no_op(stack_env: Any, local_stack: Any, prefix: str,
                                            story: dict[str, Any], tmp_path: Path) -> None:
    from tests.pipelines.test_e2e import endpoint_state

    if "endpoint" not in story:  # run on its own: make the story's promotion first
        promoted, _, _ = promote_completed_run(local_stack, prefix, story, tmp_path)
        assert promoted.ok, promoted.message
    endpoint = story["endpoint"]
    before = counts(local_stack)

    result = run_scheduled(local_stack, prefix)

    assert result.ok and result.outcome == "skipped"
    assert result.message is not None and result.message.startswith(
        f"nothing to do: {prefix}/tuning/run-1 was already promoted (export {prefix}/exports/run-1, "
        f"endpoint {endpoint}, at ")
    assert steps_run(result) == NO_OP_STEPS
    assert result.message in Path(result.log).read_text()
    assert counts(local_stack) == before
    assert list(endpoint_state(local_stack, endpoint).traffic_split.values()) == [100]  # still serving
