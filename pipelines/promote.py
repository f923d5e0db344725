"""The promotion pipeline: one compiled DAG from a tuning job's output to a serving model.

    exit handler (finalize: roll back / clean up, record the outcome)
    └── discover ──▶ promote-if-due
                     ├── if there is something to promote:
                     │   export (plan ──▶ ParallelFor worker ──▶ commit) ──▶ validate ──▶ deploy-if-valid
                     │                           ├── if validation passed: deploy ──▶ smoke-test ──▶ quality-gate
                     │                           │       ──▶ verify-traffic ──▶ record-promotion
                     │                           └── else: reject (fails the run with validate's summary)
                     └── else: skip (ends the run successfully, saying why: a no-op)

Why it is shaped this way:
- ``discover`` resolves ``source``: a plain one passes through; ``newest:PREFIX`` (what
  ``tune2serve schedule create --source-prefix`` sets) becomes the newest completed
  tuning output under PREFIX, or nothing when there is none or when a promotion record
  says it was promoted already. Then the run is a successful no-op whose ``skip`` step
  (and discover's log and ``reason`` output) says why, so a schedule firing every night
  costs two small steps and never shows red for having nothing new to do.
- ``quality-gate`` (components/quality_gate/) compares the candidate, on the endpoint of
  its own that deploy made, with the model serving on ``production_endpoint`` over the
  ``eval_set`` parameter's cases (deterministic checks, an optional pairwise judge) and
  outputs a verdict — promote / hold / reject, by the rule of its POLICY.md — which
  verify-traffic takes as its ``quality_verdict``: after a hold or a reject it promotes
  nothing — unless ``force_promote`` gives a reason, an override audited in a log line, the
  endpoint's labels and the promotion record (components/verify_traffic/override.py). The step itself never fails for a verdict (its reports and Metrics say why),
  and with ``eval_set`` empty it compares nothing and outputs no verdict.
- ``record-promotion`` writes that record (``<export>.promotion.json`` beside the export)
  once verify-traffic says the model serves.
- Nothing is deployed from a failed validation (the ``dsl.If`` gate). A failed
  validation also fails the run (``reject``), so a scheduled or triggered run that
  stopped at the gate shows red in the Vertex AI UI and alerts on failed runs fire; the
  reports say why.
- Each gate sits in a small sub-pipeline (``promote-if-due``, ``deploy-if-valid``) that
  takes the deciding output (discover's ``proceed``, validate's ``passed``) as an input,
  so the condition reads a DAG input. KFP on Vertex AI handles a condition on a task
  output too, but ``kfp.local`` (2.17) cannot evaluate one (it only looks up parent
  inputs and silently skips the branch); this shape runs the same way on both, so the
  laptop run is the Vertex run.
- ``export`` is a sub-pipeline that fans out over shard groups: ``export-plan`` reads
  headers only and splits the output shards into at most ``export_workers`` groups (a
  model under ``export_min_worker_size`` per worker gets fewer; a small one, one),
  ``dsl.ParallelFor`` runs one ``export-worker`` per group, and ``export-commit`` writes
  the index and manifest once every group is staged: nothing at DEST is visible as
  complete before it (components/export/fanout/fanout.py). Vertex AI Pipelines is the
  distributed engine; kfp.local runs the same DAG, the workers one after another.
- Workers and commit get ``export_cpu`` / ``export_memory`` (``set_cpu_limit`` /
  ``set_memory_limit``: Vertex AI Pipelines picks a machine with at least that much;
  network bandwidth grows with vCPUs). A gs:// → gs:// export holds ~2 output shards on
  local disk whatever the model size, within a step's default boot disk. Where a user
  wants a named machine (network bandwidth, a reservation) or more disk, the worker runs
  as a Vertex AI custom job instead (``export_machine_type``, ``export_boot_disk_size_gb``,
  ``export_service_account``) through GCPC's ``create_custom_training_job_from_component``:
  a ``dsl.If`` on the parameter picks the branch, so ``kfp.local`` (default: empty)
  runs the pipeline-step worker, the same code as the custom job's container.
- ``finalize`` runs whatever happens (``dsl.ExitHandler``) with the run's final status:
  on failure it rolls the production endpoint back and deletes what this run made
  (found by the ``tune2serve-run`` label = the pipeline job name), so the model that
  served before still serves.
- Steps with side effects (export writes, deploy, smoke-test, verify-traffic,
  record-promotion, finalize) never come from the cache: a cached "deployed" is a lie
  once the endpoint is gone. Validate is read-only but is uncached too, since its input
  is a fresh export; discover and skip are uncached because their answer depends on what
  is in the bucket now, not on their parameters.
- Retries only where repeating is safe and a transient failure is plausible: deploy is
  idempotent (a rerun finds what the last attempt made), discover and validate only
  read, finalize is idempotent and must succeed for the rollback to happen.
  Smoke-test and verify-traffic already retry their own requests; repeating a failed
  check or a rollback would only delay the verdict. Record-promotion never fails the run
  over a storage error (that would make finalize undo a good promotion); it warns.

No environment is read here: every setting is a pipeline parameter with a literal
default, so ``compiled/`` does not depend on who compiled it.
"""

# No `from __future__ import annotations`: KFP reads the real type objects of signatures.
import copy
from typing import Any

from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component
from kfp import dsl

from tune2serve.components.deploy.component import deploy
from tune2serve.components.export.fanout.component import export_commit, export_plan, export_worker
from tune2serve.components.step_component import step_component
from tune2serve.components.discover.component import discover
from tune2serve.components.promotion_record.component import record_promotion
from tune2serve.components.quality_gate.component import quality_gate
from tune2serve.components.smoke_test.component import smoke_test
from tune2serve.components.validate.component import validate
from tune2serve.components.verify_traffic.component import verify_traffic
from tune2serve.components.verify_traffic.finalize_component import finalize
from tune2serve.pipelines.parameters import documented

PIPELINE_NAME = "promote-checkpoint"

# The run id that labels what deploy makes and lets finalize find it again. It resolves
# to the PipelineJob name on Vertex AI and to the local run name under kfp.local.
RUN_ID = dsl.PIPELINE_JOB_NAME_PLACEHOLDER

# Display names shown on the DAG in the Vertex AI UI (the task names stay the
# component names, which kfp.local prints and the main job times).
DISPLAY_NAMES = {
    "discover": "Find what to promote",
    "skip": "Nothing to do (no-op)",
    "export": "Export checkpoint",
    "export-plan": "Plan export (headers only)",
    "export-group": "Export shard group",
    "export-worker": "Write and stage shards",
    "export-worker-job": "Write and stage shards (custom job)",
    "export-commit": "Commit export (index, manifest)",
    "validate": "Validate export",
    "deploy": "Deploy to endpoint",
    "smoke-test": "Smoke-test endpoint",
    "quality-gate": "Quality gate: candidate vs serving",
    "verify-traffic": "Verify traffic / promote",
    "record-promotion": "Record promotion",
    "reject": "Validation failed",
    "finalize": "Finalize (roll back on failure)",
}


@step_component
def reject(summary: str) -> None:
    """Fails the run because validation failed; nothing was deployed.

    Args:
        summary: validate's one-line summary of the error findings.
    """
    from tune2serve.components.errors import ValidationFailedError

    raise ValidationFailedError(
        f"validation failed, nothing was deployed: {summary} "
        "(the validate report lists every finding and what to do)"
    )


@step_component
def skip(reason: str) -> str:
    """Ends the run successfully without promoting anything, saying why (a scheduled run
    whose newest tuning output was promoted already, or that found none).

    Args:
        reason: discover's reason, for example "nothing to do: ... was already promoted".
    """
    from tune2serve.components.logs import get_logger, log_event

    log_event(get_logger("pipeline"), "run.nothing_to_do", reason)
    return reason


# The worker as a Vertex AI custom job (GCPC's standard wrapper), for when the user names
# a machine type. Its default worker pool is the worker's own container; the pipeline
# overrides machine type and boot disk with its parameters (``sized_worker_pool``).
export_worker_job = create_custom_training_job_from_component(
    export_worker, display_name="tune2serve-export-worker", labels={"managed-by": "tune2serve"})
export_worker_job.component_spec.name = "export-worker-job"


def sized_worker_pool(machine_type: Any, boot_disk_size_gb: Any) -> list[dict[str, Any]]:
    """The custom job's worker pool with machine type and boot disk from the pipeline's
    parameters (KFP compiles the channels inside the list into placeholders, which
    Vertex AI resolves); the container, command and arguments stay GCPC's."""
    (pool,) = copy.deepcopy(export_worker_job.component_spec.inputs["worker_pool_specs"].default)
    pool["machine_spec"]["machine_type"] = machine_type
    pool["disk_spec"]["boot_disk_size_gb"] = boot_disk_size_gb
    return [pool]


@dsl.pipeline(name="export-group")
@documented(
    "One export worker: writes and stages one group of shards, as a pipeline step or (with "
    "export_machine_type) as a custom job on that machine.",
    source="the tuning output to export, as discover resolved it.",
    dest="where the export is written, as discover resolved it.",
    group="one group of shards, an item of the plan step's output.",
)
def export_group(
    source: str,
    dest: str,
    group: dict,
    base_model: str,
    checkpoint: str,
    dtype: str,
    max_shard_size: str,
    export_cpu: str,
    export_memory: str,
    export_machine_type: str,
    export_boot_disk_size_gb: int,
    export_service_account: str,
) -> None:
    # A sub-pipeline of its own so that the resource requests read DAG inputs: the kfp
    # 2.17 compiler does not pass parameters used only in set_cpu_limit/set_memory_limit
    # into a ParallelFor body, which then names inputs it does not have. The branch reads
    # a DAG input too, which kfp.local evaluates (it runs the pipeline-step branch).
    with dsl.If(export_machine_type == "", name="on-pipeline-step"):
        (
            export_worker(source=source, dest=dest, group=group, base_model=base_model, checkpoint=checkpoint,
                          dtype=dtype, max_shard_size=max_shard_size)
            .set_display_name(DISPLAY_NAMES["export-worker"])
            .set_caching_options(False)
            .set_cpu_limit(export_cpu)
            .set_memory_limit(export_memory)
            .set_retry(num_retries=1, backoff_duration="30s")  # a rerun reuses the shards it staged
        )
    with dsl.Else(name="on-custom-job"):
        (
            export_worker_job(source=source, dest=dest, group=group, base_model=base_model, checkpoint=checkpoint,
                              dtype=dtype, max_shard_size=max_shard_size,
                              worker_pool_specs=sized_worker_pool(export_machine_type, export_boot_disk_size_gb),
                              service_account=export_service_account)
            .set_display_name(DISPLAY_NAMES["export-worker-job"])
            .set_caching_options(False)
            .set_retry(num_retries=1, backoff_duration="30s")
        )


# Requests for the plan step, which reads headers only.
PLAN_CPU, PLAN_MEMORY = "2", "8G"


@dsl.pipeline(name="export")
@documented(
    "Exports the checkpoint over shard groups: plan (headers only), one worker per group in "
    "parallel, then commit (index and manifest last).",
    source="the tuning output to export, as discover resolved it.",
    dest="where the export is written, as discover resolved it.",
)
def export_fanout(
    source: str,
    dest: str,
    base_model: str,
    checkpoint: str,
    dtype: str,
    max_shard_size: str,
    export_workers: int,
    export_min_worker_size: str,
    export_cpu: str,
    export_memory: str,
    export_machine_type: str,
    export_boot_disk_size_gb: int,
    export_service_account: str,
) -> str:
    planned = (
        export_plan(source=source, dest=dest, workers=export_workers, min_worker_size=export_min_worker_size,
                    base_model=base_model, checkpoint=checkpoint, dtype=dtype, max_shard_size=max_shard_size)
        .set_display_name(DISPLAY_NAMES["export-plan"])
        .set_caching_options(False)
        .set_cpu_limit(PLAN_CPU)
        .set_memory_limit(PLAN_MEMORY)
        .set_retry(num_retries=1, backoff_duration="10s")
    )
    with dsl.ParallelFor(planned.output, name="shard-groups") as group:
        worker = export_group(
            source=source, dest=dest, group=group, base_model=base_model, checkpoint=checkpoint, dtype=dtype,
            max_shard_size=max_shard_size, export_cpu=export_cpu, export_memory=export_memory,
            export_machine_type=export_machine_type, export_boot_disk_size_gb=export_boot_disk_size_gb,
            export_service_account=export_service_account,
        ).set_display_name(DISPLAY_NAMES["export-group"])
    committed = (
        export_commit(source=source, dest=dest, base_model=base_model, checkpoint=checkpoint, dtype=dtype,
                      max_shard_size=max_shard_size)
        .set_display_name(DISPLAY_NAMES["export-commit"])
        .set_caching_options(False)
        .set_cpu_limit(export_cpu)
        .set_memory_limit(export_memory)
        .after(worker)
    )
    return committed.outputs["export_uri"]


@dsl.pipeline(name="deploy-if-valid")
@documented("Deploys, smoke-tests, promotes and records an export only when validation passed.")
def deploy_if_valid(
    passed: bool,
    summary: str,
    export_uri: str,
    project: str,
    region: str,
    machine_type: str,
    accelerator_type: str,
    accelerator_count: int,
    min_replica_count: int,
    max_replica_count: int,
    endpoint_display_name: str,
    model_display_name: str,
    enable_private_service_connect: bool,
    psc_project_allowlist: list,
    deploy_timeout_s: int,
    golden: str,
    production_endpoint: str,
    canary_percent: int,
    steps: str,
    significance: float,
    keep_previous_s: int,
    bake_s: int,
    max_error_rate_delta: float,
    max_latency_ratio: float,
    min_bake_requests: int,
    eval_set: str,
    judge_endpoint: str,
    judge_model: str,
    judge_prompt: str,
    eval_margin: float,
    eval_delta: float,
    eval_min_pass_rate: float,
    force_promote: str,
) -> None:
    with dsl.If(passed == True, name="validation-passed"):  # noqa: E712 (KFP needs ==)
        deployed = (
            deploy(
                export_uri=export_uri,
                project=project,
                region=region,
                machine_type=machine_type,
                accelerator_type=accelerator_type,
                accelerator_count=accelerator_count,
                min_replica_count=min_replica_count,
                max_replica_count=max_replica_count,
                endpoint_display_name=endpoint_display_name,
                model_display_name=model_display_name,
                enable_private_service_connect=enable_private_service_connect,
                psc_project_allowlist=psc_project_allowlist,
                deploy_timeout_s=deploy_timeout_s,
                run_id=RUN_ID,
                validated=summary,
            )
            .set_display_name(DISPLAY_NAMES["deploy"])
            .set_caching_options(False)
            .set_retry(num_retries=1, backoff_duration="30s", backoff_factor=2.0)
        )
        smoke = (
            smoke_test(
                endpoint=deployed.outputs["endpoint"],
                project=project,
                region=region,
                golden=golden,
            )
            .set_display_name(DISPLAY_NAMES["smoke-test"])
            .set_caching_options(False)
        )
        gate = (
            quality_gate(
                candidate_endpoint=deployed.outputs["endpoint"],
                baseline_endpoint=production_endpoint,
                project=project,
                region=region,
                eval_set=eval_set,
                judge_endpoint=judge_endpoint,
                judge_model=judge_model,
                judge_prompt=judge_prompt,
                eval_margin=eval_margin,
                eval_delta=eval_delta,
                eval_min_pass_rate=eval_min_pass_rate,
            )
            .set_display_name(DISPLAY_NAMES["quality-gate"])
            .set_caching_options(False)
            .after(smoke)
        )
        verified = (
            verify_traffic(
                endpoint=deployed.outputs["endpoint"],
                model=deployed.outputs["model"],
                production_endpoint=production_endpoint,
                project=project,
                region=region,
                canary_percent=canary_percent,
                steps=steps,
                significance=significance,
                keep_previous_s=keep_previous_s,
                bake_s=bake_s,
                max_error_rate_delta=max_error_rate_delta,
                max_latency_ratio=max_latency_ratio,
                min_bake_requests=min_bake_requests,
                quality_verdict=gate.outputs["verdict"],
                force_promote=force_promote,
                run_id=RUN_ID,
            )
            .set_display_name(DISPLAY_NAMES["verify-traffic"])
            .set_caching_options(False)
            .after(gate)
        )
        (
            record_promotion(
                export_uri=export_uri,
                endpoint=deployed.outputs["endpoint"],
                model=deployed.outputs["model"],
                run_id=RUN_ID,
                outcome=verified.outputs["outcome"],
                production_endpoint=production_endpoint,
                override=verified.outputs["override"],
                quality_verdict=gate.outputs["verdict"],
                eval_set_sha256=gate.outputs["eval_set_sha256"],
                judge=gate.outputs["judge"],
            )
            .set_display_name(DISPLAY_NAMES["record-promotion"])
            .set_caching_options(False)
        )
    with dsl.Else(name="validation-failed"):
        reject(summary=summary).set_display_name(DISPLAY_NAMES["reject"]).set_caching_options(False)


@dsl.pipeline(name="promote-if-due")
@documented(
    "Exports, validates and (if valid) deploys and promotes what discover found; a successful "
    "no-op that says why when it found nothing to promote.",
    source="the tuning output to export, as discover resolved it.",
    export_dest="where the export is written, as discover resolved it.",
)
def promote_if_due(
    proceed: bool,
    reason: str,
    source: str,
    export_dest: str,
    project: str,
    region: str,
    base_model: str,
    checkpoint: str,
    dtype: str,
    max_shard_size: str,
    export_workers: int,
    export_min_worker_size: str,
    export_cpu: str,
    export_memory: str,
    export_machine_type: str,
    export_boot_disk_size_gb: int,
    export_service_account: str,
    strict: bool,
    verify_checksums: bool,
    machine_type: str,
    accelerator_type: str,
    accelerator_count: int,
    min_replica_count: int,
    max_replica_count: int,
    endpoint_display_name: str,
    model_display_name: str,
    enable_private_service_connect: bool,
    psc_project_allowlist: list,
    deploy_timeout_s: int,
    golden: str,
    production_endpoint: str,
    canary_percent: int,
    steps: str,
    significance: float,
    keep_previous_s: int,
    bake_s: int,
    max_error_rate_delta: float,
    max_latency_ratio: float,
    min_bake_requests: int,
    eval_set: str,
    judge_endpoint: str,
    judge_model: str,
    judge_prompt: str,
    eval_margin: float,
    eval_delta: float,
    eval_min_pass_rate: float,
    force_promote: str,
) -> None:
    with dsl.If(proceed == True, name="something-to-promote"):  # noqa: E712 (KFP needs ==)
        exported = export_fanout(
            source=source,
            dest=export_dest,
            base_model=base_model,
            checkpoint=checkpoint,
            dtype=dtype,
            max_shard_size=max_shard_size,
            export_workers=export_workers,
            export_min_worker_size=export_min_worker_size,
            export_cpu=export_cpu,
            export_memory=export_memory,
            export_machine_type=export_machine_type,
            export_boot_disk_size_gb=export_boot_disk_size_gb,
            export_service_account=export_service_account,
        ).set_display_name(DISPLAY_NAMES["export"])
        validated = (
            validate(
                source=exported.output,
                strict=strict,
                machine_type=machine_type,
                accelerator_type=accelerator_type,
                accelerator_count=accelerator_count,
                verify_checksums=verify_checksums,
                base_model=base_model,
            )
            .set_display_name(DISPLAY_NAMES["validate"])
            .set_caching_options(False)
            .set_retry(num_retries=1, backoff_duration="10s")
        )
        deploy_if_valid(
            passed=validated.outputs["passed"],
            summary=validated.outputs["summary"],
            export_uri=exported.output,
            project=project,
            region=region,
            machine_type=machine_type,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
            min_replica_count=min_replica_count,
            max_replica_count=max_replica_count,
            endpoint_display_name=endpoint_display_name,
            model_display_name=model_display_name,
            enable_private_service_connect=enable_private_service_connect,
            psc_project_allowlist=psc_project_allowlist,
            deploy_timeout_s=deploy_timeout_s,
            golden=golden,
            production_endpoint=production_endpoint,
            canary_percent=canary_percent,
            steps=steps,
            significance=significance,
            keep_previous_s=keep_previous_s,
            bake_s=bake_s,
            max_error_rate_delta=max_error_rate_delta,
            max_latency_ratio=max_latency_ratio,
            min_bake_requests=min_bake_requests,
            eval_set=eval_set,
            judge_endpoint=judge_endpoint,
            judge_model=judge_model,
            judge_prompt=judge_prompt,
            eval_margin=eval_margin,
            eval_delta=eval_delta,
            eval_min_pass_rate=eval_min_pass_rate,
            force_promote=force_promote,
        ).set_display_name("Deploy if valid")
    with dsl.Else(name="nothing-to-promote"):
        skip(reason=reason).set_display_name(DISPLAY_NAMES["skip"]).set_caching_options(False)


@dsl.pipeline(name=PIPELINE_NAME)
@documented(
    "Promotes a fine-tuned checkpoint to a Vertex AI endpoint: export, validate, deploy, "
    "smoke-test, verify traffic.",
    lead_with_required=True,
)
def promote_checkpoint(
    source: str,
    export_dest: str,
    project: str,
    region: str = "us-central1",
    base_model: str = "",
    checkpoint: str = "final",
    dtype: str = "auto",
    max_shard_size: str = "5GB",
    export_workers: int = 8,
    export_min_worker_size: str = "20GB",
    export_cpu: str = "8",
    export_memory: str = "32G",
    export_machine_type: str = "",
    export_boot_disk_size_gb: int = 100,
    export_service_account: str = "",
    strict: bool = False,
    verify_checksums: bool = False,
    machine_type: str = "",
    accelerator_type: str = "",
    accelerator_count: int = 0,
    min_replica_count: int = 1,
    max_replica_count: int = 1,
    endpoint_display_name: str = "",
    model_display_name: str = "",
    enable_private_service_connect: bool = False,
    psc_project_allowlist: list = [],  # noqa: B006 (KFP compiles the literal; never mutated)
    deploy_timeout_s: int = 7200,
    golden: str = "",
    production_endpoint: str = "",
    canary_percent: int = 10,
    steps: str = "",
    significance: float = 0.01,
    keep_previous_s: int = 0,
    bake_s: int = 0,
    max_error_rate_delta: float = 0.01,
    max_latency_ratio: float = 1.5,
    min_bake_requests: int = 20,
    eval_set: str = "",
    judge_endpoint: str = "",
    judge_model: str = "",
    judge_prompt: str = "",
    eval_margin: float = 0.05,
    eval_delta: float = 0.05,
    eval_min_pass_rate: float = 0.9,
    force_promote: str = "",
) -> None:
    cleanup = (
        finalize(project=project, region=region, production_endpoint=production_endpoint, run_id=RUN_ID)
        .set_display_name(DISPLAY_NAMES["finalize"])
        .set_caching_options(False)
        .set_retry(num_retries=2, backoff_duration="10s", backoff_factor=2.0)
    )
    with dsl.ExitHandler(cleanup, name="promotion"):
        found = (
            discover(source=source, export_dest=export_dest)
            .set_display_name(DISPLAY_NAMES["discover"])
            .set_caching_options(False)
            .set_retry(num_retries=1, backoff_duration="10s")
        )
        promote_if_due(
            proceed=found.outputs["proceed"],
            reason=found.outputs["reason"],
            source=found.outputs["source"],
            export_dest=found.outputs["export_dest"],
            project=project,
            region=region,
            base_model=base_model,
            checkpoint=checkpoint,
            dtype=dtype,
            max_shard_size=max_shard_size,
            export_workers=export_workers,
            export_min_worker_size=export_min_worker_size,
            export_cpu=export_cpu,
            export_memory=export_memory,
            export_machine_type=export_machine_type,
            export_boot_disk_size_gb=export_boot_disk_size_gb,
            export_service_account=export_service_account,
            strict=strict,
            verify_checksums=verify_checksums,
            machine_type=machine_type,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
            min_replica_count=min_replica_count,
            max_replica_count=max_replica_count,
            endpoint_display_name=endpoint_display_name,
            model_display_name=model_display_name,
            enable_private_service_connect=enable_private_service_connect,
            psc_project_allowlist=psc_project_allowlist,
            deploy_timeout_s=deploy_timeout_s,
            golden=golden,
            production_endpoint=production_endpoint,
            canary_percent=canary_percent,
            steps=steps,
            significance=significance,
            keep_previous_s=keep_previous_s,
            bake_s=bake_s,
            max_error_rate_delta=max_error_rate_delta,
            max_latency_ratio=max_latency_ratio,
            min_bake_requests=min_bake_requests,
            eval_set=eval_set,
            judge_endpoint=judge_endpoint,
            judge_model=judge_model,
            judge_prompt=judge_prompt,
            eval_margin=eval_margin,
            eval_delta=eval_delta,
            eval_min_pass_rate=eval_min_pass_rate,
            force_promote=force_promote,
        ).set_display_name("Promote if due")


__all__ = ["DISPLAY_NAMES", "PIPELINE_NAME", "RUN_ID", "deploy_if_valid", "export_fanout", "export_group", "promote_checkpoint", "promote_if_due",
           "reject", "skip"]
