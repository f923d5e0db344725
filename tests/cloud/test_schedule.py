"""``tune2serve schedule``: the cron parser, the scheduled-run semantics (newest completed
tuning output, "already promoted" no-op), and the schedule verbs through the SDK against
the local Pipelines API, whose ``tick`` fires due schedules."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from tests.conftest import upload_folder
from tune2serve.components.errors import SourceNotFoundError, UsageError
from tune2serve.components.discover import discover
from tune2serve.pipelines import schedule
from tune2serve.cli.main import main
from tune2serve.components.promotion_record.promotion_record import find_promotion, read_promotion_record, write_promotion_record

UTC = dt.timezone.utc


@pytest.mark.parametrize(("cron", "after", "expected"), [
    ("0 3 * * *", dt.datetime(2025, 6, 1, 3, 0, tzinfo=UTC), dt.datetime(2025, 6, 2, 3, 0, tzinfo=UTC)),
    ("*/15 * * * *", dt.datetime(2025, 6, 1, 10, 7, 30, tzinfo=UTC), dt.datetime(2025, 6, 1, 10, 15, tzinfo=UTC)),
    ("30 9 * * MON-FRI", dt.datetime(2025, 6, 6, 10, 0, tzinfo=UTC), dt.datetime(2025, 6, 9, 9, 30, tzinfo=UTC)),
    ("0 0 1,15 * *", dt.datetime(2025, 2, 15, 0, 0, tzinfo=UTC), dt.datetime(2025, 3, 1, 0, 0, tzinfo=UTC)),
    ("0 0 29 2 *", dt.datetime(2025, 1, 1, tzinfo=UTC), dt.datetime(2028, 2, 29, tzinfo=UTC)),
    ("0 0 13 * 5", dt.datetime(2025, 6, 1, tzinfo=UTC), dt.datetime(2025, 6, 6, tzinfo=UTC)),  # 13th OR Friday
    ("CRON_TZ=America/New_York 0 3 * * *", dt.datetime(2025, 6, 1, tzinfo=UTC), dt.datetime(2025, 6, 1, 7, 0, tzinfo=UTC)),
])
def test_cron_next_run(cron: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert schedule.parse_cron(cron).next_after(after) == expected


@pytest.mark.parametrize(("cron", "message"), [
    ("0 3 * *", r"has 4 field\(s\); expected 5 fields"),
    ("61 * * * *", r"minute value 61 is outside 0-59"),
    ("0 3 * * FUNDAY", r"day-of-week value 'FUNDAY' is not a number"),
    ("*/0 * * * *", r"minute step '0' must be a positive number"),
    ("0 9-5 * * *", r"hour range '9-5' runs backwards"),
    ("TZ=Mars/Olympus 0 3 * * *", r"unknown time zone 'Mars/Olympus'"),
    ("@daily", r"has 1 field\(s\)"),
])
def test_a_cron_that_does_not_parse_says_why(cron: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        schedule.parse_cron(cron)


def _write_run(root: Path, files: dict[str, str], mtime: float) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (mtime, mtime))


FINAL_HF = {"adapter_config.json": "{}", "adapter_model.safetensors": "x", "checkpoint-5/trainer_state.json": "{}"}
FINAL_VERTEX = {"postprocess/node-0/checkpoints/final/config.json": "{}",
                "postprocess/node-0/checkpoints/final/model.safetensors": "x"}
IN_PROGRESS = {"checkpoint-5/adapter_config.json": "{}", "checkpoint-5/adapter_model.safetensors": "x",
               "checkpoint-5/training_args.bin": "x"}


def test_newest_completed_output_skips_runs_still_training(tmp_path: Path) -> None:
    _write_run(tmp_path / "run-a", FINAL_HF, 1000)
    _write_run(tmp_path / "run-b", FINAL_VERTEX, 2000)
    _write_run(tmp_path / "run-c", IN_PROGRESS, 3000)
    assert discover.newest_tuning_output(str(tmp_path)) == f"{tmp_path}/run-b"
    _write_run(tmp_path / "training" / "run-d", IN_PROGRESS, 4000)
    assert discover.newest_tuning_output(str(tmp_path / "training")) is None


def test_newest_completed_output_on_gcs(gcs_bucket: str, tmp_path: Path) -> None:
    _write_run(tmp_path / "old", FINAL_HF, 1000)
    _write_run(tmp_path / "new", FINAL_VERTEX, 1000)
    upload_folder(tmp_path / "old", gcs_bucket, "tuning/run-1")
    upload_folder(tmp_path / "new", gcs_bucket, "tuning/run-2")
    assert discover.newest_tuning_output(f"gs://{gcs_bucket}/tuning/") == f"gs://{gcs_bucket}/tuning/run-2"


def test_a_missing_bucket_is_a_mistake_an_empty_prefix_is_nothing_to_do(gcs_bucket: str) -> None:
    """Both list as nothing; only the empty prefix is a run with nothing to promote yet.
    A misspelt bucket must fail the scheduled run by name, not no-op it forever."""
    assert discover.newest_tuning_output(f"gs://{gcs_bucket}/tuning") is None
    with pytest.raises(SourceNotFoundError, match=f"gs://{gcs_bucket}-typo/tuning: its bucket does not exist; "
                                                  "check the schedule's --source-prefix"):
        discover.newest_tuning_output(f"gs://{gcs_bucket}-typo/tuning")


def test_resolve_source_is_a_no_op_once_promoted(gcs_bucket: str, tmp_path: Path) -> None:
    _write_run(tmp_path / "run", FINAL_HF, 1000)
    newest = upload_folder(tmp_path / "run", gcs_bucket, "tuning/run-1")
    exports = f"gs://{gcs_bucket}/exports"
    assert discover.resolve_source("gs://elsewhere/x", exports) == discover.SourceResolution(
        "gs://elsewhere/x", exports, True, "promoting gs://elsewhere/x")
    assert discover.resolve_source(f"newest:gs://{gcs_bucket}/none", exports) == discover.SourceResolution(
        None, exports, False, f"nothing to do: no completed tuning output under gs://{gcs_bucket}/none")
    due = discover.resolve_source(f"newest:gs://{gcs_bucket}/tuning", exports)
    assert (due.proceed, due.source, due.export_dest) == (True, newest, f"{exports}/run-1")
    record = write_promotion_record(due.export_dest, endpoint="projects/p/locations/r/endpoints/1",
                                    model="projects/p/locations/r/models/2", source=newest, now=0)
    assert read_promotion_record(due.export_dest) == record
    assert find_promotion(newest + "/", exports) == record
    resolved = discover.resolve_source(f"newest:gs://{gcs_bucket}/tuning", exports)
    assert (resolved.proceed, resolved.source) == (False, newest)
    assert resolved.reason.startswith(f"nothing to do: {newest} was already promoted (export {exports}/run-1")


def _create_argv(srv, bucket: str, template: Path, *extra: str) -> list[str]:
    return ["schedule", "create", "--project", srv.project, "--region", srv.region, "--pipeline-root",
            f"gs://{bucket}/runs", "--template", str(template), "--display-name", "nightly", *extra]


def test_schedule_verbs_end_to_end(pipelines, gcs_bucket, tiny_template, capsys) -> None:
    argv = _create_argv(pipelines, gcs_bucket, tiny_template, "--cron", "0 3 * * *", "--param", "source=gs://b/x", "--json")
    assert main(argv) == 0
    created = json.loads(capsys.readouterr().out)
    name = created["name"]
    assert (created["state"], created["cron"], created["display_name"]) == ("ACTIVE", "0 3 * * *", "nightly")
    stored = pipelines.service.get_schedule(name)
    assert stored["createPipelineJobRequest"]["pipelineJob"]["runtimeConfig"]["parameterValues"] == {"source": "gs://b/x"}

    base = ["--project", pipelines.project, "--region", pipelines.region, "--json"]
    assert main(["schedule", "list", *base]) == 0
    assert [s["name"] for s in json.loads(capsys.readouterr().out)["schedules"]] == [name]
    assert main(["schedule", "pause", name.rsplit("/", 1)[-1], *base]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "PAUSED"
    assert pipelines.service.tick(force=True) == []  # a paused schedule starts nothing
    assert main(["schedule", "resume", name, *base]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "ACTIVE"
    assert main(["schedule", "delete", name, *base]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": name, "state": "DELETED"}
    assert pipelines.service.schedules == {}
    assert main(["schedule", "pause", name, *base]) == 1
    assert "404" in capsys.readouterr().err


def test_scheduled_runs_promote_the_newest_output_once(pipelines, gcs_bucket, scheduled_template, tmp_path) -> None:
    _write_run(tmp_path / "run", FINAL_VERTEX, 1000)
    newest = upload_folder(tmp_path / "run", gcs_bucket, "tuning/run-7")
    seen = tmp_path / "promoted.txt"
    exports = f"gs://{gcs_bucket}/exports"
    argv = _create_argv(pipelines, gcs_bucket, scheduled_template, "--cron", "*/5 * * * *",
                        "--source-prefix", f"gs://{gcs_bucket}/tuning", "--param", f"export_dest={exports}",
                        "--param", f"record={seen}")
    assert main(argv) == 0
    [first] = pipelines.service.tick(force=True)
    assert pipelines.service.wait(first, timeout_s=120)["state"] == "PIPELINE_STATE_SUCCEEDED"
    assert seen.read_text() == f"{newest} {exports}/run-7\n"

    write_promotion_record(f"{exports}/run-7", endpoint="e", model="m", source=newest)
    [second] = pipelines.service.tick(force=True)
    assert pipelines.service.wait(second, timeout_s=120)["state"] == "PIPELINE_STATE_SUCCEEDED"
    assert seen.read_text() == f"{newest} {exports}/run-7\n"  # the second run was a no-op
    log = (pipelines.service.state_dir / "pipeline_runs" / second.rsplit("/", 1)[-1] / "log.txt").read_text()
    assert f"nothing to do: {newest} was already promoted" in log


def test_due_schedules_fire_on_their_cron(pipelines, gcs_bucket, tiny_template) -> None:
    assert main(_create_argv(pipelines, gcs_bucket, tiny_template, "--cron", "0 3 * * *", "--param", "source=x",
                             "--max-runs", "1")) == 0
    [stored] = pipelines.service.schedules.values()
    due = dt.datetime.fromisoformat(stored["nextRunTime"].replace("Z", "+00:00"))
    assert (due.hour, due.minute) == (3, 0)
    assert pipelines.service.tick(due - dt.timedelta(minutes=1)) == []
    [run] = pipelines.service.tick(due)
    assert pipelines.service.get_job(run)["scheduleName"] == stored["name"]
    assert pipelines.service.get_schedule(stored["name"])["state"] == "COMPLETED"  # --max-runs 1
    pipelines.service.wait(run, timeout_s=120)


@pytest.mark.parametrize(("extra", "message"), [
    (["--cron", "0 25 * * *", "--param", "source=x"], "hour value 25 is outside 0-23"),
    (["--cron", "0 3 * * *", "--param", "source=x", "--max-concurrent-runs", "0"],
     "argument --max-concurrent-runs: '0' is out of range; expected a whole number from 1 to 100"),
    (["--cron", "0 3 * * *"], "missing required pipeline parameter(s) source"),
    (["--cron", "0 3 * * *", "--source-prefix", "/local/path"], "--source-prefix '/local/path': give gs://"),
])
def test_bad_schedule_input_creates_nothing(pipelines, gcs_bucket, tiny_template, capsys, extra, message) -> None:
    try:
        code = main(_create_argv(pipelines, gcs_bucket, tiny_template, *extra))
    except SystemExit as e:  # argparse refuses a flag out of its range while parsing
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert pipelines.service.schedules == {}
