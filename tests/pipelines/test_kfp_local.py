"""The kfp.local runner on the kfp of the lock (2.17.3): what it reports about a real run
— each task's start and end, status, failure message, place in the DAG, and outputs —
read from the step processes and the files kfp.local writes, never its console wording.
A kfp release that moves the task folders or changes how steps are started fails here,
by name, before it fails a promotion."""

# no `from __future__ import annotations`: kfp reads the annotations as types

import builtins
import json
import re
from pathlib import Path

import pytest

from tune2serve.pipelines import kfp_local


def _compile(flag_default: bool) -> object:
    """A pipeline with every shape the promotion DAG has: an exit handler, a nested
    pipeline, a ParallelFor whose iterations write artifacts, and a condition around a
    step with no outputs at all (which leaves no file when it fails, like ``reject``)."""
    from kfp import dsl

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def make(n: int) -> list:
        return list(range(n))

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def work(i: int, note: dsl.Output[dsl.Markdown]) -> int:
        import time

        time.sleep(0.3)
        with open(note.path, "w") as f:
            f.write(f"item {i}")
        return i * 2

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def boom(flag: bool) -> None:
        if flag:
            raise ValueError("asked to fail\nsecond line")

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def fin() -> str:
        return "done"

    @dsl.pipeline(name="inner")
    def inner(n: int, flag: bool) -> None:
        made = make(n=n)
        with dsl.ParallelFor(made.output) as i:
            work(i=i)
        with dsl.If(flag == True):  # noqa: E712 - a KFP condition
            boom(flag=flag).after(made)

    @dsl.pipeline(name="shapes")
    def shapes(n: int = 2, flag: bool = flag_default) -> None:
        with dsl.ExitHandler(fin()):
            inner(n=n, flag=flag)

    return shapes.pipeline_spec


@pytest.fixture(scope="module")
def followed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[kfp_local.PipelineRun, list]:
    """The failing run, with every progress event it told as it went."""
    events: list = []
    run = kfp_local.run_pipeline(_compile(True), {"n": 2}, pipeline_root=tmp_path_factory.mktemp("failed"),
                                 progress=events.append)
    return run, events


@pytest.fixture(scope="module")
def failed_run(followed_run: tuple[kfp_local.PipelineRun, list]) -> kfp_local.PipelineRun:
    return followed_run[0]


def test_each_task_is_told_as_it_starts_and_ends(followed_run: tuple[kfp_local.PipelineRun, list]) -> None:
    """One start and one end per task process, in the order they happened: a loop's
    iterations each by name, the failed step as failed, the exit handler last; each end
    with the attempt's time."""
    run, events = followed_run
    told = [(e.kind, e.task, e.iteration) for e in events]
    assert sorted(told) == sorted([(kind, task, it) for task, it in (
        ("make", ""), ("work", "for-loop-1-iteration-0"), ("work", "for-loop-1-iteration-1"), ("boom", ""),
        ("fin", "")) for kind in ("start", "end")]), told
    for key in {(e.task, e.iteration) for e in events}:
        kinds = [e.kind for e in events if (e.task, e.iteration) == key]
        assert kinds == ["start", "end"], (key, kinds)
    assert told[0] == ("start", "make", "") and told[-1] == ("end", "fin", "")
    assert told.index(("end", "make", "")) < told.index(("start", "work", "for-loop-1-iteration-0"))
    ends = {(e.task, e.iteration): e for e in events if e.kind == "end"}
    assert not ends[("boom", "")].succeeded and all(e.succeeded for k, e in ends.items() if k[0] != "boom")
    assert ends[("work", "for-loop-1-iteration-1")].seconds >= 0.3  # it sleeps 0.3 s
    assert all(e.attempt == 1 for e in events)
    line = kfp_local.progress_line(ends[("work", "for-loop-1-iteration-1")])
    assert re.fullmatch(r"\d\d:\d\d:\d\d work \[for-loop-1-iteration-1\] succeeded in \d+\.\d s", line), line
    start = kfp_local.progress_line(kfp_local.StepEvent("boom", "start", attempt=2), {"boom": "waits for nothing"})
    assert start.endswith(" boom (attempt 2) started: waits for nothing")
    assert kfp_local.progress_line(ends[("boom", "")]).split(" ", 1)[1].startswith("boom failed in ")


def test_what_each_task_waits_for_is_read_from_the_spec() -> None:
    """Through the DAGs around it: a loop's iterations and a condition's step wait for
    what the loop and the condition wait for; the exit handler for everything."""
    from google.protobuf import json_format

    upstream = kfp_local.upstream_tasks(json_format.MessageToDict(_compile(True)))
    assert upstream == {"make": frozenset(), "work": {"make"}, "boom": {"make"},
                        "fin": {"make", "work", "boom"}}, upstream


def test_a_task_gone_between_two_looks_ends_when_a_task_after_it_starts(tmp_path: Path) -> None:
    """Its process never seen, a task ends when one that waits for it starts on another
    thread, not later when its own thread starts something else (a loop's iterations
    start on other threads than the task that made the loop's items)."""
    import threading

    events: list = []
    argv = lambda task: ["python", "--executor_input", json.dumps(  # noqa: E731
        {"outputs": {"outputFile": str(tmp_path / "run" / task / "executor_output.json")}}), "--function_to_execute"]
    (tmp_path / "run" / "make").mkdir(parents=True)
    (tmp_path / "run" / "make" / kfp_local.EXECUTOR_OUTPUT).write_text("{}")
    watcher = kfp_local._TaskWatcher(tmp_path, events.append, {"work": frozenset({"make"})})
    watcher.started(argv("make"))
    other = threading.Thread(target=watcher.started, args=(argv("work"),))
    other.start()
    other.join()
    told = [(e.kind, e.task) for e in events]
    assert told == [("start", "make"), ("end", "make"), ("start", "work")], told
    assert events[1].succeeded
    lone = kfp_local._TaskWatcher(tmp_path, None, {})  # without the spec: only its own thread ends it
    lone.started(argv("make"))
    other = threading.Thread(target=lone.started, args=(argv("work"),))
    other.start()
    other.join()
    assert [a.finished for a in lone.attempts][0] is None


def test_each_task_is_reported_with_its_start_end_and_status(failed_run: kfp_local.PipelineRun) -> None:
    run = failed_run
    assert not run.succeeded
    statuses = {s.task: s.status for s in run.steps}
    assert statuses == {"make": "SUCCESS", "work": "SUCCESS", "boom": "FAILURE", "fin": "SUCCESS"}, run.steps
    # in the order they started: make first, the exit handler last (the loop and the
    # condition both wait for make only, so kfp.local may start either first)
    assert run.steps[0].task == "make" and run.steps[-1].task == "fin"
    make, work, boom, fin = (run.step(t) for t in ("make", "work", "boom", "fin"))
    assert make and work and boom and fin
    assert all(s.started <= s.finished for s in run.steps)
    assert make.finished <= work.started and make.finished <= boom.started  # both wait for make
    assert work.seconds >= 0.3  # the two iterations are one step, from the first start to the last end
    assert max(work.finished, boom.finished) <= fin.started  # the exit handler runs last
    # every step inside the run's window (one clock, monotonic); not their sum: the loop's
    # iterations and the condition's step may run at the same time, on kfp.local's threads
    assert max(s.finished for s in run.steps) - min(s.started for s in run.steps) <= run.wall_s


def test_a_failed_step_has_its_exception_and_its_place_in_the_dag(failed_run: kfp_local.PipelineRun) -> None:
    run = failed_run
    assert run.failed_step is not None and run.failed_step.task == "boom"
    assert run.failed_step.message == "ValueError: asked to fail second line"
    assert run.failed_tasks == ["boom", "condition-2", "inner", "exit-handler-1"]
    # the same chain kfp.local names on its console (read here only to hold the two equal)
    said = re.search(r"Inner task failed: (.+)\.$", re.sub(r"\x1b\[[0-9;]*m", "", run.log_path.read_text()), re.M)
    assert said is not None and said.group(1) == " inside ".join(f"'{t}'" for t in run.failed_tasks)


def test_outputs_and_artifacts_are_read_from_the_task_folders(failed_run: kfp_local.PipelineRun) -> None:
    run = failed_run
    assert run.run_name.startswith("shapes-") and run.run_dir.is_dir()
    assert run.outputs("make") == {"Output": [0, 1]}
    assert run.outputs("fin") == {"Output": "done"}
    assert run.outputs("boom") == {}  # failed: no executor output
    for i in (0, 1):
        iteration = run.run_dir / f"for-loop-1-iteration-{i}" / "work"
        assert json.loads((iteration / kfp_local.EXECUTOR_OUTPUT).read_text())["parameterValues"] == {"Output": i * 2}
        assert (iteration / "note").read_text() == f"item {i}"


def test_a_run_that_skips_a_branch_succeeds_without_it(tmp_path: Path) -> None:
    real_print = builtins.print
    run = kfp_local.run_pipeline(_compile(False), {}, pipeline_root=tmp_path)
    assert run.succeeded and run.failed_tasks == [] and run.failed_step is None
    assert [(s.task, s.status) for s in run.steps] == [("make", "SUCCESS"), ("work", "SUCCESS"), ("fin", "SUCCESS")]
    assert builtins.print is real_print  # kfp.local's indenting print, swapped from the loop's threads, is undone


def test_a_spec_dict_with_doubles_for_integers_runs_as_its_proto(tmp_path: Path) -> None:
    """A PipelineJob's spec arrives as JSON (every number a double), as in the local
    stack's pipelineJobs; the runner gives kfp.local ints back."""
    from google.protobuf import json_format

    spec = json.loads(json.dumps(json_format.MessageToDict(_compile(False))))
    run = kfp_local.run_pipeline(spec, {"n": 1.0}, pipeline_root=tmp_path)
    assert run.succeeded, run.log_path.read_text()[-2000:]
    assert run.outputs("make") == {"Output": [0]}


def test_only_step_processes_under_the_root_are_tasks(tmp_path: Path) -> None:
    out = tmp_path / "run-1" / "task" / kfp_local.EXECUTOR_OUTPUT
    argv = ["sh", "-c", "program", "--executor_input", json.dumps({"outputs": {"outputFile": str(out)}})]
    assert kfp_local.task_folder(argv, tmp_path) == out.parent
    assert kfp_local.task_folder(argv, tmp_path / "elsewhere") is None
    assert kfp_local.task_folder(["python", "-m", "something"], tmp_path) is None
    assert kfp_local.task_folder(["sh", "--executor_input", "not json"], tmp_path) is None
