"""The promotion pipeline: one compiled DAG from a tuning job's output to a serving model.

    exit handler (finalize: roll back / clean up, record the outcome)
    └── discover ──▶ promote-if-due
                     ├── if there is something to promote:
                     │   export ──▶ validate ──▶ deploy-if-valid
                     │                           ├── if validation passed: deploy ──▶ smoke-test
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
from kfp import dsl

from tune2serve.components.deploy.component import deploy
from tune2serve.components.export.component import export
from tune2serve.components.image import DEFAULT_IMAGE
from tune2serve.components.scheduling.component import discover, record_promotion
from tune2serve.components.smoke_test.component import smoke_test
from tune2serve.components.validate.component import validate
from tune2serve.components.verify_traffic.component import verify_traffic
from tune2serve.components.verify_traffic.finalize_component import finalize

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
    "validate": "Validate export",
    "deploy": "Deploy to endpoint",
    "smoke-test": "Smoke-test endpoint",
    "verify-traffic": "Verify traffic / promote",
    "record-promotion": "Record promotion",
    "reject": "Validation failed",
    "finalize": "Finalize (roll back on failure)",
}


@dsl.component(base_image=DEFAULT_IMAGE)
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


@dsl.component(base_image=DEFAULT_IMAGE)
def skip(reason: str) -> str:
    """Ends the run successfully without promoting anything, saying why (a scheduled run
    whose newest tuning output was promoted already, or that found none).

    Args:
        reason: discover's reason, for example "nothing to do: ... was already promoted".
    """
    from tune2serve.components.logs import get_logger, log_event

    log_event(get_logger("pipeline"), "run.nothing_to_do", reason)
    return reason


@dsl.pipeline(name="deploy-if-valid")
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
) -> None:
    """Deploys, smoke-tests, promotes and records an export only when validation passed.

    Args:
        passed: validate's verdict; False stops here and fails the run.
        summary: validate's summary, the failure message when it did not pass.
        export_uri: the export folder to deploy.
        project: Google Cloud project of the endpoint.
        region: Vertex AI region of the endpoint.
        machine_type: serving machine type; empty lets Vertex AI recommend one.
        accelerator_type: accelerator type; set with machine_type, or empty.
        accelerator_count: accelerators per replica; set with machine_type, or 0.
        min_replica_count: minimum replicas of the deployed model.
        max_replica_count: maximum replicas of the deployed model.
        endpoint_display_name: display name of the new endpoint; empty for a default.
        model_display_name: display name of the registered model; empty for a default.
        enable_private_service_connect: make a PSC (private) endpoint.
        psc_project_allowlist: projects allowed to reach the PSC endpoint.
        deploy_timeout_s: how long to wait for the deploy operation, in seconds.
        golden: golden prompts as JSON Lines text; empty for sanity prompts only.
        production_endpoint: endpoint to promote onto; empty to verify the new one alone.
        canary_percent: share of traffic for the canary step (0: 10%).
        steps: canary schedule such as "10,50,100" (instead of canary_percent).
        significance: false-alarm rate of the traffic-share test.
        keep_previous_s: seconds to keep the previous model deployed at 0% after promotion.
    """
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
                run_id=RUN_ID,
            )
            .set_display_name(DISPLAY_NAMES["verify-traffic"])
            .set_caching_options(False)
            .after(smoke)
        )
        (
            record_promotion(
                export_uri=export_uri,
                endpoint=deployed.outputs["endpoint"],
                model=deployed.outputs["model"],
                run_id=RUN_ID,
                outcome=verified.outputs["outcome"],
                production_endpoint=production_endpoint,
            )
            .set_display_name(DISPLAY_NAMES["record-promotion"])
            .set_caching_options(False)
        )
    with dsl.Else(name="validation-failed"):
        reject(summary=summary).set_display_name(DISPLAY_NAMES["reject"]).set_caching_options(False)


@dsl.pipeline(name="promote-if-due")
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
) -> None:
    """Exports, validates and (if valid) deploys and promotes what discover found; a
    successful no-op that says why when it found nothing to promote.

    Args:
        proceed: discover's verdict; False ends the run here, successfully.
        reason: discover's reason, logged by the no-op step.
        source: the tuning output to export, as discover resolved it.
        export_dest: where the export is written, as discover resolved it.
        project: Google Cloud project of the endpoint.
        region: Vertex AI region of the endpoint.
        base_model: base model folder for a LoRA adapter; empty for a full checkpoint.
        checkpoint: which checkpoint to export: final, best, latest or a step number.
        dtype: dtype of the exported weights.
        max_shard_size: largest safetensors shard of the export.
        strict: treat validation warnings as errors.
        verify_checksums: hash every exported file against the manifest in validate.
        machine_type: serving machine type; empty lets Vertex AI recommend one.
        accelerator_type: accelerator type; set with machine_type, or empty.
        accelerator_count: accelerators per replica; set with machine_type, or 0.
        min_replica_count: minimum replicas of the deployed model.
        max_replica_count: maximum replicas of the deployed model.
        endpoint_display_name: display name of the new endpoint; empty for a default.
        model_display_name: display name of the registered model; empty for a default.
        enable_private_service_connect: make a PSC (private) endpoint.
        psc_project_allowlist: projects allowed to reach the PSC endpoint.
        deploy_timeout_s: how long to wait for the deploy operation, in seconds.
        golden: golden prompts as JSON Lines text; empty for sanity prompts only.
        production_endpoint: endpoint to promote onto; empty to verify the new one alone.
        canary_percent: share of traffic for the canary step (0: 10%).
        steps: canary schedule such as "10,50,100" (instead of canary_percent).
        significance: false-alarm rate of the traffic-share test.
        keep_previous_s: seconds to keep the previous model deployed at 0% after promotion.
    """
    with dsl.If(proceed == True, name="something-to-promote"):  # noqa: E712 (KFP needs ==)
        exported = (
            export(
                source=source,
                dest=export_dest,
                base_model=base_model,
                checkpoint=checkpoint,
                dtype=dtype,
                max_shard_size=max_shard_size,
            )
            .set_display_name(DISPLAY_NAMES["export"])
            .set_caching_options(False)
        )
        validated = (
            validate(
                source=exported.outputs["export_uri"],
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
            export_uri=exported.outputs["export_uri"],
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
        ).set_display_name("Deploy if valid")
    with dsl.Else(name="nothing-to-promote"):
        skip(reason=reason).set_display_name(DISPLAY_NAMES["skip"]).set_caching_options(False)


@dsl.pipeline(name=PIPELINE_NAME)
def promote_checkpoint(
    source: str,
    export_dest: str,
    project: str,
    region: str = "us-central1",
    base_model: str = "",
    checkpoint: str = "final",
    dtype: str = "auto",
    max_shard_size: str = "5GB",
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
    canary_percent: int = 0,
    steps: str = "",
    significance: float = 0.01,
    keep_previous_s: int = 0,
) -> None:
    """Promotes a fine-tuned checkpoint to a Vertex AI endpoint: export, validate, deploy, smoke-test, verify traffic.

    Args:
        source: the tuning job's output: a local path, a gs:// prefix (HF Trainer output, Vertex tuning output tree, full checkpoint or LoRA adapter) or a tuning job resource name projects/P/locations/L/tuningJobs/ID. For scheduled runs, newest:gs://BUCKET/PREFIX promotes the newest completed tuning output under PREFIX (one folder per tuning run), and the run ends as a successful no-op that says why when there is none or it was already promoted.
        export_dest: gs:// prefix (or local path) where the deployable export is written; it must not hold another export. With source newest:PREFIX it is a prefix shared by the schedule's runs: each export goes to export_dest/<tuning run folder>, with its promotion record <export>.promotion.json beside it.
        project: Google Cloud project that owns the endpoint and the model.
        region: Vertex AI region of the endpoint, for example us-central1.
        base_model: base model folder (local or gs://) when source is a LoRA adapter; it is also compared with the export by validate. Empty when source is a full checkpoint.
        checkpoint: which checkpoint of a training run to export: final, best, latest or a step number.
        dtype: dtype of the exported weights: auto (as trained), bfloat16, float16 or float32.
        max_shard_size: largest safetensors shard of the export, for example 5GB.
        strict: treat validation warnings as errors.
        verify_checksums: also hash every exported file against the export's manifest during validation (reads all the data; off by default, validate reads headers only).
        machine_type: serving machine type, for example g2-standard-12; empty lets Vertex AI recommend one. Machine type, accelerator type and count are set together or not at all.
        accelerator_type: accelerator type, for example NVIDIA_L4; empty with machine_type empty.
        accelerator_count: accelerators per replica (1, 2, 4 or 8); 0 with machine_type empty.
        min_replica_count: minimum number of serving replicas.
        max_replica_count: maximum number of serving replicas (autoscaling upper bound).
        endpoint_display_name: display name of the endpoint the deploy makes; empty for one derived from the export.
        model_display_name: display name of the registered model; empty for one derived from the export.
        enable_private_service_connect: deploy to a Private Service Connect endpoint (needed under VPC Service Controls) instead of a public dedicated one.
        psc_project_allowlist: projects allowed to connect to the PSC endpoint; used with enable_private_service_connect.
        deploy_timeout_s: how long to wait for the deploy operation, in seconds, before failing the run.
        golden: golden prompts as JSON Lines text, one case a line, {"prompt": ...} or {"messages": [...]} with "expect" (a regular expression); empty to send the built-in sanity prompts only.
        production_endpoint: the serving endpoint to promote the new model onto (resource name or id) through canary steps; empty to check that the new endpoint serves 100% on healthy replicas.
        canary_percent: share of traffic the new model gets in its one canary step before 100% (0 means 10%); give this or steps, not both.
        steps: canary schedule as comma-separated percents, for example 10,50,100; empty to use canary_percent.
        significance: false-alarm rate of the statistical test that the observed traffic shares match the configured split.
        keep_previous_s: seconds the previous model stays deployed at 0% traffic after a promotion, for a fast manual rollback; 0 undeploys it at once.
    """
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
        ).set_display_name("Promote if due")


__all__ = ["DISPLAY_NAMES", "PIPELINE_NAME", "RUN_ID", "deploy_if_valid", "promote_checkpoint", "promote_if_due",
           "reject", "skip"]
