"""Each package's public names, pinned (as httpx pins its exports): what a package's
``__all__`` declares, and every name another package (the CLI, the DAG, the runners, the
local stack, the benchmarks) imports from it across a package boundary. A rename or a move
that drops one of them fails here by name, not somewhere deep in a run."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# module -> names its own ``__all__`` must keep declaring (a subset: adding names is fine).
ALL: dict[str, set[str]] = {
    "tune2serve.components.errors": {
        "CheckpointError", "DestinationError", "EndpointBusyError", "MergeError", "OperationFailedError",
        "PromotionAbortedError", "PromotionError", "SmokeTestFailedError", "SourceError", "SourceNotFoundError",
        "SourceReadError", "UnsafePickleError", "UsageError", "ValidationFailedError", "VertexError",
        "VertexUnavailableError", "VertexUserError"},
    "tune2serve.components.export": {"ExportResult", "export_checkpoint"},
    "tune2serve.components.export.export": {"ExportResult", "Part", "export_checkpoint"},
    "tune2serve.components.export.fanout.fanout": {"Group", "MIN_WORKER_BYTES", "commit_export", "export_group",
                                                   "plan_export", "split"},
    "tune2serve.components.validate": {"Finding", "MachineSpec", "Report", "ValidateOptions", "parse_machine_spec",
                                       "recommend_machine_spec", "validate_checkpoint"},
    "tune2serve.components.discover.discover": {"NEWEST_PREFIX", "SourceResolution", "newest_tuning_output",
                                                "resolve_source"},
    "tune2serve.components.step_component": {"step_component"},
    # the HTML reports' one look, which every step's report (and the quality gate's) is built on
    "tune2serve.components.report_html": {"Badge", "Card", "Code", "Items", "Markup", "Para", "Row", "Section",
                                          "Table", "Verdict", "esc", "page"},
    "tune2serve.pipelines.schedule": {"Cron", "create_schedule", "parse_cron"},
}

# module -> names imported from it by another top-level package (components, pipelines, cli,
# localstack, demo) or by bench/.
USED: dict[str, set[str]] = {
    # the steps' KFP components, as the DAG (pipelines/promote.py) takes them
    "tune2serve.components.export.fanout.component": {"export_plan", "export_worker", "export_commit"},
    "tune2serve.components.export.component": {"export"},
    "tune2serve.components.validate.component": {"validate"},
    "tune2serve.components.deploy.component": {"deploy"},
    "tune2serve.components.smoke_test.component": {"smoke_test"},
    "tune2serve.components.verify_traffic.component": {"verify_traffic"},
    "tune2serve.components.verify_traffic.finalize_component": {"finalize"},
    "tune2serve.components.discover.component": {"discover"},
    "tune2serve.components.promotion_record.component": {"record_promotion"},
    # the steps' plain logic, as the CLI verbs call it
    "tune2serve.components.export.export": {"export_checkpoint"},
    "tune2serve.components.validate.report": {"render_text", "write_reports"},
    "tune2serve.components.deploy.deploy": {"deploy_export"},
    "tune2serve.components.deploy.request": {"DeploySpec", "check_replicas", "reservation_from_flags"},
    "tune2serve.components.smoke_test.smoke": {"raise_if_failed", "run_smoke_test"},
    "tune2serve.components.smoke_test.report": {"render_markdown", "write_reports"},
    "tune2serve.components.verify_traffic.verify": {"verify_traffic"},
    "tune2serve.components.verify_traffic.bake": {"BakePolicy"},
    "tune2serve.components.verify_traffic.report": {"write_reports"},
    "tune2serve.components.verify_traffic.endpoint_api": {"EndpointApi"},
    "tune2serve.components.verify_traffic.rollback": {"rollback_endpoint"},
    "tune2serve.components.promotion_record.promotion_record": {"find_promotion", "read_promotion_record",
                                                                "record_after_verify", "write_promotion_record"},
    # the shared layers
    "tune2serve.components.checkpoint.storage": {"open_folder"},
    "tune2serve.components.checkpoint.secrets": {"redact"},
    "tune2serve.components.image": {"DEFAULT_IMAGE", "package_version"},
    "tune2serve.components.ranges": {"ACCELERATOR_COUNT", "BAKE_S", "CANARY_PERCENT", "DEFAULT_CANARY_PERCENT",
                                     "DEPLOY_TIMEOUT_S", "FAULT_COUNT", "FAULT_MS", "FAULT_PERCENT",
                                     "KEEP_PREVIOUS_S", "MAX_CONCURRENT_RUNS", "MAX_ERROR_RATE_DELTA",
                                     "MAX_LATENCY_RATIO", "MAX_REPLICA_COUNT", "MAX_RUNS", "MAX_SHARD_SIZE",
                                     "MIN_BAKE_REQUESTS", "MIN_REPLICA_COUNT", "POLL_S", "SIGNIFICANCE", "STEPS",
                                     "SUBMIT_TIMEOUT_S", "check_parameter_values", "check_parameters",
                                     "describe_parameter"},
    "tune2serve.components.user_input": {"BadPattern", "Pattern", "PatternTimeout", "compile_pattern", "jsonl_records",
                                         "read_text_file"},
    "tune2serve.components.smoke_test.golden": {"load_golden"},
    "tune2serve.components.logs": {"configure", "get_logger", "log_event"},
    "tune2serve.components.vertex.clients": {"credentials", "target"},
    "tune2serve.components.vertex.endpoints": {"get_endpoint"},
    "tune2serve.components.vertex.errors": {"translate_api_error"},
    "tune2serve.components.vertex.pipeline_jobs": {"JOB_ID_PATTERN", "RunSpec", "change_schedule", "is_already_exists",
                                                   "list_schedules", "submit_run", "wait_for_run"},
    "tune2serve.components.vertex.resources": {"endpoint_name"},
    "tune2serve.components.vertex.machine_spec": {"MachineSpec", "parse_machine_spec"},
    # the DAG and its runners, as the CLI and the local stack call them
    "tune2serve.pipelines.promote": {"promote_checkpoint"},
    "tune2serve.pipelines.compile": {"compile_pipeline", "load_spec_dict"},
    "tune2serve.pipelines.main_job": {"JobOptions", "run_job", "summary_text"},
    "tune2serve.pipelines.kfp_local": {"environment", "promote_pipeline_spec", "run_pipeline", "timing_table"},
    "tune2serve.pipelines.submit": {"parse_assignments", "parse_labels", "prepare", "submit"},
    "tune2serve.pipelines.schedule": {"create_schedule", "parse_cron"},
    # the CLI
    "tune2serve.cli.main": {"EXIT_CODES", "VERBS", "build_parser", "entry", "exit_code_for", "exit_process", "main"},
    # the local stack, as the CLI, the main job and the benchmarks drive it
    "tune2serve.localstack.stack": {"LocalStack", "StackError", "resolve_home"},
    "tune2serve.localstack.hints": {"local_command", "running_home"},
    "tune2serve.localstack.faults": {"Fault", "KIND_HELP", "KINDS", "inject_fault"},
    "tune2serve.localstack.admin": {"tick_schedules"},
    "tune2serve.localstack.gcs": {"command", "wait_ready"},
    "tune2serve.localstack.ports": {"free_port"},
    # the demo models, as `tune2serve run` and the benchmarks make them
    "tune2serve.demo.tiny_models": {"TinySpec", "make_tiny_model", "train_tokenizer"},
    "tune2serve.demo.tuned_adapter": {"golden_jsonl", "make_tuned_adapter"},
}


@pytest.mark.parametrize("module", sorted(ALL))
def test_all_keeps_its_names_and_each_exists(module: str) -> None:
    mod = importlib.import_module(module)
    declared = set(mod.__all__)
    assert ALL[module] <= declared, f"{module}.__all__ lost {sorted(ALL[module] - declared)}"
    missing = sorted(name for name in declared if not hasattr(mod, name))
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("module", sorted(USED))
def test_names_other_packages_import_exist(module: str) -> None:
    mod = importlib.import_module(module)
    missing = sorted(name for name in USED[module] if not hasattr(mod, name))
    assert not missing, f"{module} lost {missing}"


def test_the_console_script_resolves() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"tune2serve": "tune2serve.cli.main:entry"}
    module, _, attr = scripts["tune2serve"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_every_cli_verb_has_its_command_module() -> None:
    from tune2serve.cli.main import VERBS

    for verb, (module, _) in VERBS.items():
        mod = importlib.import_module(f"tune2serve.cli.commands.{module}")
        assert callable(mod.add_arguments) and callable(mod.run), verb
