"""The main job's pure parts: flag checks before anything starts, the arguments it gives
the pipeline, and reading kfp.local's output into per-step records."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from tune2serve.components.errors import UsageError
from tune2serve.pipelines import kfp_local
from tune2serve.pipelines.main_job import JobOptions, pipeline_arguments, run_job


@pytest.mark.parametrize(("opts", "message"), [
    (JobOptions(source="gs://b/run", project="p"), "--project needs --region"),
    (JobOptions(source="gs://b/run", project="p", region="us-central1"), "give --export-dest gs://"),
    (JobOptions(project="p", region="r", export_dest="gs://b/x"), "the demo .no SOURCE. runs on the local stack"),
    (JobOptions(source="/x", golden_file="/nonexistent/golden.jsonl", home="/nonexistent-home"), "--golden"),
])
def test_bad_flags_fail_before_anything_starts(opts: JobOptions, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run_job(opts)


def test_arguments_are_pipeline_parameters() -> None:
    from tune2serve.pipelines.promote import promote_checkpoint

    args = pipeline_arguments(JobOptions(steps="10,100"), source="gs://b/t", base_model="gs://b/base",
                              export_dest="gs://b/e", project="p", region="r", golden="", production_endpoint="")
    inputs = promote_checkpoint.component_spec.inputs
    assert set(args) <= set(inputs)
    assert {name for name, spec in inputs.items() if not spec.optional} <= set(args)
    assert args["steps"] == "10,100" and args["canary_percent"] == 10  # the share it means; steps replaces it


KFP_LOCAL_OUTPUT = """\
12:00:00.000 - INFO - Running pipeline: \x1b[95m'promote-checkpoint'\x1b[0m
12:00:00.010 - INFO - Executing task \x1b[96m'export'\x1b[0m
12:00:02.000 - INFO - Task \x1b[96m'export'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
12:00:02.010 - INFO - Executing task \x1b[96m'smoke-test'\x1b[0m
    Traceback (most recent call last):
      File "x.py", line 1, in <module>
    tune2serve.components.errors.SmokeTestFailedError: golden case capital-of-france: expected /paris/
    answer was 'rome'

12:00:03.000 - ERROR - Task \x1b[96m'smoke-test'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
12:00:03.010 - INFO - Executing task \x1b[96m'finalize'\x1b[0m
12:00:04.000 - INFO - Task \x1b[96m'finalize'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
12:00:04.010 - ERROR - Pipeline \x1b[95m'promote-checkpoint'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. \
Inner task failed: \x1b[96m'smoke-test'\x1b[0m inside \x1b[96m'condition-2'\x1b[0m inside \x1b[96m'exit-handler-1'\x1b[0m.
"""


# The DAG around smoke-test in the spec, and the step processes kfp.local ran (times are
# the output's line numbers: each process from its "Executing" line to its status line).
SPEC = {"root": {"dag": {"tasks": {
    "exit-handler-1": {"componentRef": {"name": "comp-exit-handler-1"}},
    "finalize": {"componentRef": {"name": "comp-finalize"}}}}},
    "components": {
        "comp-exit-handler-1": {"dag": {"tasks": {
            "export": {"componentRef": {"name": "comp-export"}},
            "condition-2": {"componentRef": {"name": "comp-condition-2"}}}}},
        "comp-condition-2": {"dag": {"tasks": {"smoke-test": {"componentRef": {"name": "comp-smoke-test"}}}}},
        "comp-export": {"executorLabel": "exec-export"}, "comp-smoke-test": {"executorLabel": "exec-smoke-test"},
        "comp-finalize": {"executorLabel": "exec-finalize"}}}
PROCESSES = [("export", 1.0, 2.0, True), ("smoke-test", 3.0, 9.0, False), ("finalize", 10.0, 11.0, True)]


def test_step_tracker_reads_kfp_local_output() -> None:
    from pathlib import Path

    tap = kfp_local._OutputTap(io.StringIO(), None)
    for i, line in enumerate(KFP_LOCAL_OUTPUT.splitlines()):
        tap.read_line(kfp_local._ANSI.sub("", line), float(i))
    attempts = [kfp_local._Attempt(Path("/root/run") / task, start, end, ok) for task, start, end, ok in PROCESSES]
    tracker = SimpleNamespace(steps=kfp_local.steps_from_attempts(attempts, tap.exceptions),
                              failed_tasks=kfp_local.dag_path(SPEC, "smoke-test"))
    assert [(s.task, s.status) for s in tracker.steps] == [
        ("export", "SUCCESS"), ("smoke-test", "FAILURE"), ("finalize", "SUCCESS")]
    smoke = tracker.steps[1]
    assert smoke.message == "SmokeTestFailedError: golden case capital-of-france: expected /paris/ answer was 'rome'"
    assert tracker.steps[0].seconds == 1.0
    assert tracker.failed_tasks == ["smoke-test", "condition-2", "exit-handler-1"]
