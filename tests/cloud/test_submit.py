"""``tune2serve submit``: parameters checked against the compiled pipeline, then a real
PipelineJob created through the SDK on the local Pipelines API and run with kfp.local."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.errors import UsageError
from tune2serve.components.vertex.pipeline_jobs import console_url
from tune2serve.pipelines import submit
from tune2serve.cli.main import main


def _argv(server, bucket: str, template: Path, *extra: str) -> list[str]:
    return ["submit", "--project", server.project, "--region", server.region,
            "--pipeline-root", f"gs://{bucket}/runs", "--template", str(template), *extra]


def test_template_inputs_are_read_with_types_and_requiredness(tiny_template: Path) -> None:
    template = submit.load_template(tiny_template)
    assert template.name == "echo-pipeline"
    assert {n: (p.type, p.required) for n, p in template.inputs.items()} == {
        "source": ("STRING", True), "n": ("NUMBER_INTEGER", False), "record": ("STRING", False),
    }


def test_flags_override_the_file_and_are_typed(tiny_template: Path) -> None:
    template = submit.load_template(tiny_template)
    values = submit.resolve_parameters(template, {"source": "gs://a/b", "n": 2}, {"n": "7"})
    assert values == {"source": "gs://a/b", "n": 7}


@pytest.mark.parametrize(("from_file", "flags", "message"), [
    ({}, {"sourc": "x"}, r"unknown pipeline parameter\(s\) sourc; the pipeline declares: n, record, source"),
    ({}, {"n": "3"}, r"missing required pipeline parameter\(s\) source; give them with --param"),
    ({}, {"source": "x", "n": "three"}, r"parameter n='three': not a NUMBER_INTEGER"),
    ({"source": "x", "n": True}, {}, r"parameter n: expected NUMBER_INTEGER, got bool True"),
])
def test_bad_parameters_are_usage_errors(tiny_template: Path, from_file, flags, message) -> None:
    with pytest.raises(UsageError, match=message):
        submit.resolve_parameters(submit.load_template(tiny_template), from_file, flags)


def test_console_url_is_the_vertex_runs_page() -> None:
    assert console_url("projects/p/locations/europe-west4/pipelineJobs/run-1") == (
        "https://console.cloud.google.com/vertex-ai/locations/europe-west4/pipelines/runs/run-1?project=p")


def test_submit_wait_json_runs_the_pipeline_end_to_end(pipelines, gcs_bucket, tiny_template, tmp_path, capsys) -> None:
    record = tmp_path / "seen.json"
    params = tmp_path / "params.yaml"
    params.write_text(f"source: gs://{gcs_bucket}/tuning/run-1\nrecord: {record}\n")
    code = main(_argv(pipelines, gcs_bucket, tiny_template, "--params-file", str(params), "--param", "n=5",
                      "--label", "team=llm", "--job-id", "echo-e2e", "--wait", "--poll", "0.3", "--json"))
    out = json.loads(capsys.readouterr().out)
    name = f"{pipelines.parent}/pipelineJobs/echo-e2e"
    assert code == 0
    assert out == {
        "ok": True, "pipeline_job": name, "job_id": "echo-e2e", "state": "PIPELINE_STATE_SUCCEEDED",
        "console_url": f"https://console.cloud.google.com/vertex-ai/locations/{pipelines.region}/pipelines/runs/echo-e2e?project={pipelines.project}",
        "parameters": {"source": f"gs://{gcs_bucket}/tuning/run-1", "n": 5, "record": str(record)}, "error": None,
    }
    assert json.loads(record.read_text()) == {"source": f"gs://{gcs_bucket}/tuning/run-1", "n": 5}
    job = pipelines.service.get_job(name)
    assert job["labels"] == {"team": "llm", "managed-by": "tune2serve"}
    assert job["runtimeConfig"]["gcsOutputDirectory"] == f"gs://{gcs_bucket}/runs"


def test_a_failing_run_exits_1_with_the_error(pipelines, gcs_bucket, tiny_template, capsys) -> None:
    code = main(_argv(pipelines, gcs_bucket, tiny_template, "--param", "source=fail", "--wait", "--poll", "0.3", "--json"))
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert (out["ok"], out["state"]) == (False, "PIPELINE_STATE_FAILED")
    assert "asked to fail" in out["error"]


def test_the_same_job_id_twice_is_refused_by_vertex(pipelines, gcs_bucket, tiny_template, capsys) -> None:
    argv = _argv(pipelines, gcs_bucket, tiny_template, "--param", "source=x", "--job-id", "once")
    assert main(argv) == 0
    assert main(argv) == 1
    assert "409" in capsys.readouterr().err
    assert pipelines.job_names() == [f"{pipelines.parent}/pipelineJobs/once"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--params-file", "{missing}"], "no such parameters file"),
    (["--params-file", "{malformed}"], "parameters file does not parse as YAML or JSON"),
    (["--params-file", "{a_list}"], "must be a mapping of parameter names to values"),
    (["--param", "source=x", "--param", "colour=red"], "unknown pipeline parameter(s) colour"),
    (["--param", "n=4"], "missing required pipeline parameter(s) source"),
    (["--param", "source"], "--param 'source': expected NAME=VALUE"),
    (["--param", "source=x", "--label", "Bad Key=1"], "--label Bad Key=1: label keys are lowercase"),
])
def test_bad_input_submits_nothing(pipelines, gcs_bucket, tiny_template, tmp_path, capsys, extra, message) -> None:
    files = {"missing": tmp_path / "nope.yaml", "malformed": tmp_path / "bad.yaml", "a_list": tmp_path / "list.json"}
    files["malformed"].write_text("source: [unclosed\n")
    files["a_list"].write_text('["source", "x"]')
    extra = [e.format(**{k: str(v) for k, v in files.items()}) for e in extra]
    assert main(_argv(pipelines, gcs_bucket, tiny_template, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert pipelines.job_names() == []


def test_a_pipeline_root_that_is_not_gcs_is_refused(pipelines, tiny_template, tmp_path, capsys) -> None:
    argv = ["submit", "--project", "p", "--region", "us-central1", "--pipeline-root", str(tmp_path),
            "--template", str(tiny_template), "--param", "source=x"]
    assert main(argv) == 2
    assert "give gs://BUCKET/PREFIX" in capsys.readouterr().err
    assert pipelines.job_names() == []


def test_a_pipeline_root_in_a_bucket_that_does_not_exist_is_refused(pipelines, gcs_bucket, tiny_template, capsys) -> None:
    """On the local stack the bucket is checked (through the storage layer) before the run is created."""
    assert main(_argv(pipelines, f"{gcs_bucket}-missing", tiny_template, "--param", "source=x")) == 2
    err = capsys.readouterr().err
    assert f"bucket '{gcs_bucket}-missing' does not exist on the local stack's GCS" in err and "Traceback" not in err
    assert pipelines.job_names() == []


def test_a_missing_template_says_how_to_make_one(pipelines, gcs_bucket, tmp_path, capsys) -> None:
    assert main(_argv(pipelines, gcs_bucket, tmp_path / "none.yaml", "--param", "source=x")) == 2
    assert "no such pipeline template" in capsys.readouterr().err
    assert pipelines.job_names() == []


@pytest.mark.parametrize(("params", "message"), [
    (["source=gs://b/t"], "missing required pipeline parameter(s) export_dest"),
    (["source=gs://b/t", "export_dest=gs://b/e", "accelerator_count=two"], "parameter accelerator_count='two': not a NUMBER_INTEGER"),
    (["source=gs://b/t", "export_dest=gs://b/e", "canary=10"], "unknown pipeline parameter(s) canary"),
])
def test_the_compiled_promotion_pipeline_checks_its_parameters(pipelines, gcs_bucket, capsys, params, message) -> None:
    template = Path(__file__).resolve().parents[2] / "compiled" / "promote_checkpoint.yaml"
    argv = _argv(pipelines, gcs_bucket, template, *[a for p in params for a in ("--param", p)])
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert pipelines.job_names() == []


def test_service_account_and_psc_interface_reach_the_pipeline_job(pipelines, gcs_bucket, tiny_template, capsys) -> None:
    attachment = "projects/p/regions/us-central1/networkAttachments/tune2serve"
    argv = _argv(pipelines, gcs_bucket, tiny_template, "--param", "source=x", "--job-id", "psc-run", "--service-account",
                 "pipeline@p.iam.gserviceaccount.com", "--network-attachment", attachment, "--no-cache")
    assert main(argv) == 0
    job = pipelines.service.get_job(f"{pipelines.parent}/pipelineJobs/psc-run")
    assert job["serviceAccount"] == "pipeline@p.iam.gserviceaccount.com"
    assert job["pscInterfaceConfig"]["networkAttachment"] == attachment
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {t["cachingOptions"].get("enableCache", False) for t in tasks.values()} == {False}
    both = _argv(pipelines, gcs_bucket, tiny_template, "--param", "source=x", "--network", "n",
                 "--network-attachment", attachment)
    assert main(both) == 2
    assert "--network and --network-attachment are alternatives" in capsys.readouterr().err


def test_the_compiled_promotion_pipeline_runs_and_fails_at_export_for_a_missing_source(
        pipelines, gcs_bucket, capsys) -> None:
    template = Path(__file__).resolve().parents[2] / "compiled" / "promote_checkpoint.yaml"
    argv = _argv(pipelines, gcs_bucket, template, "--param", f"source=gs://{gcs_bucket}/nothing-here",
                 "--param", f"export_dest=gs://{gcs_bucket}/exports/x", "--wait", "--poll", "0.5", "--json")
    assert main(argv) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["state"] == "PIPELINE_STATE_FAILED"
    assert out["error"].startswith("The DAG failed because some tasks failed: 'export-plan' inside 'export' inside 'condition-2' inside "
                                   "'condition-branches-1' inside 'promote-if-due' inside 'exit-handler-1'. "
                                   f"SourceNotFoundError: gs://{gcs_bucket}/nothing-here: no objects under this prefix")


def test_the_export_custom_jobs_run_as_the_runs_service_account() -> None:
    """An export on its own machine (export_machine_type) is a custom job, which would
    otherwise run as the Custom Code Service Agent; submit gives it the run's account
    unless export_service_account is given."""
    template = Path(__file__).resolve().parents[2] / "compiled" / "promote_checkpoint.yaml"
    given = {"source": "gs://b/t", "export_dest": "gs://b/e"}
    sa = "pipeline@p.iam.gserviceaccount.com"
    prepared = submit.prepare(project="p", region="europe-west4", template_path=template, pipeline_root="gs://b/r",
                              params=given, service_account=sa)
    values = prepared.run_spec.parameter_values
    assert (values["export_service_account"], values["project"], values["region"]) == (sa, "p", "europe-west4")
    own = submit.prepare(project="p", region="europe-west4", template_path=template, pipeline_root="gs://b/r",
                         params={**given, "export_service_account": "export@p.iam.gserviceaccount.com"},
                         service_account=sa)
    assert own.run_spec.parameter_values["export_service_account"] == "export@p.iam.gserviceaccount.com"
    none = submit.prepare(project="p", region="europe-west4", template_path=template, pipeline_root="gs://b/r",
                          params=given)
    assert "export_service_account" not in none.run_spec.parameter_values  # the compiled default, ""


def test_submit_wait_says_each_state_once_then_where_to_look(pipelines, gcs_bucket, tiny_template, tmp_path,
                                                             capsys) -> None:
    """A person following a run reads each run state once (the structured log line of a
    state change is not said a second time), then the end state and where the reports are."""
    params = tmp_path / "params.yaml"
    params.write_text(f"source: gs://{gcs_bucket}/tuning/run-2\nrecord: {tmp_path / 'seen.json'}\n")
    code = main(_argv(pipelines, gcs_bucket, tiny_template, "--params-file", str(params), "--job-id", "echo-seen",
                      "--wait", "--poll", "0.3"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    name = f"{pipelines.parent}/pipelineJobs/echo-seen"
    states = [line for line in captured.err.splitlines() if "PIPELINE_STATE_" in line]
    assert states and len(states) == len(set(states)), captured.err
    assert states[-1] == f"{name}: PIPELINE_STATE_SUCCEEDED"
    out = captured.out.splitlines()
    assert out[-2:] == ["PIPELINE_STATE_SUCCEEDED", f"the run in the console: {console_url(name)}"]


def _status(state: str, tasks: dict[str, str]) -> Any:
    from tune2serve.components.vertex.pipeline_jobs import RunStatus, TaskStatus

    return RunStatus("projects/p/locations/l/pipelineJobs/j", state, "url",
                     tasks=tuple(TaskStatus(n, s, 1.5 if s in ("SUCCEEDED", "FAILED") else None,
                                            "boom" if s == "FAILED" else None) for n, s in tasks.items()))


_STATES = ["PIPELINE_STATE_QUEUED", "PIPELINE_STATE_RUNNING", "PIPELINE_STATE_SUCCEEDED"]
_TASK_STATES = ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "SKIPPED"]


@settings(max_examples=200, deadline=None, database=None)
@given(polls=st.lists(st.tuples(st.sampled_from(_STATES),
                                st.dictionaries(st.sampled_from(["export-plan", "validate", "deploy"]),
                                                st.sampled_from(_TASK_STATES))), min_size=1, max_size=12))
def test_changes_say_each_run_and_task_state_once(polls: list[tuple[str, dict[str, str]]]) -> None:
    """Whatever the polls see, the lines are exactly the changes: the run's state when it
    differs from the last poll's, and each task whose state differs (an ended one with its
    time and error)."""
    from tune2serve.components.vertex.pipeline_jobs import changes

    before = None
    for state, tasks in polls:
        now = _status(state, tasks)
        lines = changes(before, now)
        run_changed = before is None or before.state != state
        assert (lines[:1] == [f"{now.resource_name}: {state}"]) is run_changed
        seen = {t.name: t.state for t in before.tasks} if before is not None else {}
        told = [line for line in lines if line.startswith("  ")]
        expected = [n for n, s in tasks.items() if seen.get(n) != s]
        assert [line.split()[0] for line in told] == expected
        for line in told:
            task_state = tasks[line.split()[0]]
            assert line.split()[1] == task_state.lower()
            assert (" in 1.5 s" in line) is (task_state in ("SUCCEEDED", "FAILED"))
            assert line.endswith(": boom") is (task_state == "FAILED")
        before = now


def test_a_finished_run_lists_its_report_artifacts() -> None:
    from tune2serve.components.vertex.pipeline_jobs import RunStatus, TaskStatus

    status = RunStatus("projects/p/locations/l/pipelineJobs/j", "PIPELINE_STATE_SUCCEEDED", "url", tasks=(
        TaskStatus("validate", "SUCCEEDED", 1.0, None, (("report_md", "gs://b/r/validate/report_md"),
                                                         ("metrics", "gs://b/r/validate/metrics"))),
        TaskStatus("smoke-test", "SUCCEEDED", 1.0, None, (("report", "gs://b/r/smoke/report"),))))
    assert status.reports() == ["gs://b/r/validate/report_md", "gs://b/r/smoke/report"]
