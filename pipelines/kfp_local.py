"""The one kfp.local runner: ``tune2serve run``, the local stack's pipelineJobs, the tests
and the benchmarks all run pipelines through ``run_pipeline``.

kfp.local is driven through its public API only: ``kfp.local.init(runner=
SubprocessRunner(use_venv=False), pipeline_root=..., raise_on_error=True)``, then the
pipeline is called (a component loaded from the spec with ``kfp.components``, the way a
user runs a compiled pipeline locally). Each step is a subprocess of this Python, with
the installed tune2serve package, that inherits this process's environment; the local
stack's settings (STORAGE_EMULATOR_HOST, TUNE2SERVE_VERTEX_API_ENDPOINT,
REQUESTS_CA_BUNDLE, SSL_CERT_FILE) are put into ``os.environ`` for the run and restored
afterwards.

Progress is followed from what the run leaves behind, never from kfp.local's console
wording (which changes between releases):

- a task **starts** when kfp.local starts its process: Python's ``subprocess.Popen``
  audit event (PEP 578) gives the command line, which carries the KFP executor input
  (``--executor_input``, the protocol every KFP backend, Vertex included, starts a step
  with); its ``outputs.outputFile`` names the task's folder under the pipeline root,
  ``<root>/<run>/[<loop>-iteration-N/]<task>/``;
- it **ends** when kfp.local has reaped that process (found among this process's
  children, looked at every ``WATCH_POLL``; one gone before it was looked at ends when a
  task downstream of it in the spec starts, or its thread starts the next task, whichever
  comes first), and it **succeeded** when ``executor_output.json`` is in
  its folder (the KFP executor writes it last, and only on success);
- its **outputs** are that file's ``parameterValues``; its **artifacts** are files in its
  folder (a failed step writes its reports before failing);
- a failed task's **message** is the last Python exception its process printed (the
  traceback's last line and what follows it; kfp.local relays the step's output), and its
  place in the DAG (``failed_tasks``, innermost first) is read from the spec;
- the **run failed** when kfp.local raised ``RuntimeError`` (what ``raise_on_error=True``
  does once the run, exit handler included, has ended) or a task failed.

kfp.local's own output and every step's are captured (to a log file, and to ``echo``
when given), which keeps stdout free for a command's own result (``--json``).
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tune2serve.components.vertex.retry import PollPolicy

ENV_NAMES = ("STORAGE_EMULATOR_HOST", "TUNE2SERVE_VERTEX_API_ENDPOINT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
EXECUTOR_OUTPUT = "executor_output.json"  # the KFP executor's output file (ExecutorInput.outputs.output_file)
WATCH_POLL = PollPolicy.every(0.1)  # how often the task processes are looked at (a start is never missed)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The last line of a Python traceback: "package.module.SomeError: message".
_EXCEPTION = re.compile(r"^\s*((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)): (.*)$")
_INT_TYPES = {"NUMBER_INTEGER", "INT"}


@dataclass
class StepRun:
    """One task as kfp.local ran it (the iterations of a ParallelFor are one StepRun)."""

    task: str
    status: str = "RUNNING"  # SUCCESS | FAILURE | RUNNING
    started: float = 0.0
    finished: float = 0.0
    message: str | None = None  # the step's error, when it failed

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished - self.started)


@dataclass
class PipelineRun:
    """The outcome of one local pipeline run."""

    run_name: str
    run_dir: Path
    succeeded: bool
    steps: list[StepRun]
    log_path: Path
    wall_s: float
    failed_tasks: list[str] = field(default_factory=list)  # innermost first

    def step(self, task: str) -> StepRun | None:
        return next((s for s in self.steps if s.task == task), None)

    @property
    def failed_step(self) -> StepRun | None:
        """The step whose failure failed the run: the first one that failed
        (finalize runs after it and may fail only as a consequence)."""
        return next((s for s in self.steps if s.status == "FAILURE"), None)

    def outputs(self, task: str) -> dict[str, Any]:
        """A task's output parameters ({} when it did not run or failed)."""
        path = self.run_dir / task / EXECUTOR_OUTPUT
        if not path.is_file():
            return {}
        return dict(json.loads(path.read_text(encoding="utf-8")).get("parameterValues", {}))

    def artifact(self, task: str, name: str) -> Path | None:
        """The local file of a task's output artifact, when the step wrote it."""
        path = self.run_dir / task / name
        return path if path.exists() else None


@dataclass
class _Attempt:
    """One process kfp.local ran for a task (a retry is a second attempt, same folder)."""

    folder: Path  # <root>/<run>/[<loop>-iteration-N/]<task>
    started: float
    finished: float | None = None
    succeeded: bool = False
    thread: int = 0  # the kfp.local thread that started it (runs its tasks one after another)
    process: Any = None  # its psutil.Process, once found among this process's children
    reported: bool = False  # its end has been told to the progress callback


@dataclass(frozen=True)
class StepEvent:
    """A task process starting or ending, told as it happens (``run_pipeline(progress=)``)."""

    task: str  # the task folder's name: the component's name without ``comp-``
    kind: str  # "start" | "end"
    iteration: str = ""  # "for-loop-1-iteration-1" for a ParallelFor iteration (kfp.local's folder), else ""
    attempt: int = 1  # 2 and up: kfp.local retried the task
    seconds: float = 0.0  # at "end": how long the attempt ran
    succeeded: bool = False  # at "end"


Progress = Callable[[StepEvent], None]


def progress_line(event: StepEvent, notes: Mapping[str, str] | None = None) -> str:
    """One line a person reads as a run goes: ``deploy started: waits for ...`` /
    ``deploy succeeded in 41.2 s``. ``notes`` says what a step waits for (at its start)."""
    where = f" [{event.iteration}]" if event.iteration else ""
    retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
    name = f"{event.task}{where}{retry}"
    if event.kind == "start":
        note = (notes or {}).get(event.task)
        return f"{time.strftime('%H:%M:%S')} {name} started" + (f": {note}" if note else "")
    verdict = "succeeded" if event.succeeded else "failed"
    return f"{time.strftime('%H:%M:%S')} {name} {verdict} in {event.seconds:.1f} s"


def print_progress(stream: TextIO, notes: Mapping[str, str] | None = None) -> Progress:
    """A ``progress`` callback that writes ``progress_line``s to ``stream``, one whole line
    at a time (kfp.local's threads tell their tasks at once)."""
    lock = threading.Lock()

    def tell(event: StepEvent) -> None:
        with lock:
            stream.write(progress_line(event, notes) + "\n")
            stream.flush()

    return tell


class _OutputTap(io.TextIOBase):
    """What kfp.local prints (its lines and every step's output): copied to the log (and
    ``echo``), and each Python exception the steps print kept with the time it came."""

    def __init__(self, log: TextIO, echo: TextIO | None) -> None:
        super().__init__()
        self._log = log
        self._echo = echo
        self._pending = ""
        self._open: list[str] | None = None  # the exception being read, line by line
        self.exceptions: list[tuple[float, list[str]]] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # A logging handler that kfp.local made during the run keeps this tap as its stream
        # after the run's log is closed: later lines go to the echo only, never an error.
        if not self._log.closed:
            self._log.write(text)
        if self._echo is not None and not self._echo.closed:
            self._echo.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        now = time.monotonic()
        for line in lines:
            self.read_line(_ANSI.sub("", line), now)
        return len(text)

    def read_line(self, line: str, now: float) -> None:
        """An exception line opens a message; the lines after it, up to a blank line
        (the traceback's end), continue it."""
        if m := _EXCEPTION.match(line):
            self._open = [f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}".strip()]
            self.exceptions.append((now, self._open))
        elif self._open is not None and line.strip():
            self._open.append(line.strip())
        else:
            self._open = None

    def flush(self) -> None:
        if not self._log.closed:
            self._log.flush()
        if self._echo is not None and not self._echo.closed:
            self._echo.flush()


def _children() -> set[int]:
    """This process's child pids (Linux: one small read per thread; elsewhere psutil)."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        import psutil

        return {p.pid for p in psutil.Process().children()}
    pids: set[int] = set()
    for tid in tids:
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/self/task/{tid}/children", encoding="ascii") as f:
                pids.update(int(p) for p in f.read().split())
    return pids


def task_folder(argv: list[str], root: Path) -> Path | None:
    """The task folder a step process writes to, from its executor input; None for a
    process that is no KFP step under ``root``."""
    try:
        executor_input = json.loads(argv[argv.index("--executor_input") + 1])
        output_file = Path(executor_input["outputs"]["outputFile"])
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    return output_file.parent if output_file.parent.is_relative_to(root) else None


_WATCHERS: set[_TaskWatcher] = set()
_HOOK_LOCK = threading.Lock()
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Python's audit hook (PEP 578): ``subprocess.Popen`` is raised, with the command
    line, in the thread that starts a process, before it starts — so no step, however
    short, goes unseen. Everything else returns at once."""
    if event != "subprocess.Popen" or not _WATCHERS:
        return
    try:
        argv = [str(a) for a in args[1]] if isinstance(args[1], (list, tuple)) else []
        for watcher in list(_WATCHERS):
            watcher.started(argv)
    except Exception:  # an audit hook must never break the call it watches
        pass


class _TaskWatcher:
    """Follows the step processes kfp.local starts (see the module docstring): each start
    from the audit hook, each end by polling the process (reaped: kfp.local has relayed
    all its output by then)."""

    def __init__(self, root: Path, progress: Progress | None = None,
                 upstream: Mapping[str, frozenset[str]] | None = None) -> None:
        self.root = root
        self.progress = progress
        self.upstream = upstream or {}  # task → the tasks kfp.local waits for before starting it
        self.attempts: list[_Attempt] = []
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._seen: set[int] = set()  # child pids looked at
        self._own_argv: list[str] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kfp-local-watcher", daemon=True)

    def __enter__(self) -> _TaskWatcher:
        global _hooked
        with _HOOK_LOCK:
            if not _hooked:  # an audit hook stays for the life of the process: one, shared
                sys.addaudithook(_audit)
                _hooked = True
            _WATCHERS.add(self)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with _HOOK_LOCK:
            _WATCHERS.discard(self)
        self._stop.set()
        self._thread.join()
        self.poll()  # what ended since the last look
        self._settle(time.monotonic())
        self._tell_ends()

    def started(self, argv: list[str]) -> None:
        """A process is about to start: first, what has ended by now is noted (so a task
        kfp.local reaped before starting this one ends before it starts), then the start."""
        folder = task_folder(argv, self.root)
        if folder is not None:
            self.poll()
            now, thread = time.monotonic(), threading.get_ident()
            waited_for = self.upstream.get(folder.name, frozenset())
            with self._lock:
                # this kfp.local thread ran its last task to the end before starting this one,
                # and every task this one depends on has ended (whatever thread ran it)
                for a in self.attempts:
                    if a.finished is None and (a.thread == thread or a.folder.name in waited_for):
                        a.finished, a.succeeded = now, (a.folder / EXECUTOR_OUTPUT).is_file()
                attempt = sum(1 for a in self.attempts if a.folder == folder) + 1
                self.attempts.append(_Attempt(folder, now, thread=thread))
            self._tell_ends()
            self._tell(StepEvent(folder.name, "start", self._iteration(folder), attempt))

    def _iteration(self, folder: Path) -> str:
        """The ParallelFor iteration a task folder is in ("" outside a loop)."""
        inner = folder.parent.relative_to(self.root).parts[1:]
        return "/".join(inner)

    def _tell(self, event: StepEvent) -> None:
        if self.progress is not None:
            try:
                self.progress(event)
            except Exception:  # a progress line must never break the run it reports
                pass

    def _tell_ends(self) -> None:
        """Tells each attempt's end once, when it is known."""
        with self._lock:
            ended = [a for a in self.attempts if a.finished is not None and not a.reported]
            for a in ended:
                a.reported = True
            numbers = {id(a): sum(1 for b in self.attempts if b.folder == a.folder and b.started <= a.started)
                       for a in ended}
        for a in sorted(ended, key=lambda a: a.finished or 0.0):
            self._tell(StepEvent(a.folder.name, "end", self._iteration(a.folder), numbers[id(a)],
                                 max(0.0, (a.finished or a.started) - a.started), a.succeeded))

    def _run(self) -> None:
        for interval in WATCH_POLL.intervals():
            if self._stop.wait(interval):
                return
            self.poll()

    def poll(self) -> None:
        """Finds each started attempt's process among this process's children (by the
        task folder its command line names), and notes the end of those gone. Gone is
        asked of the process itself, by pid and start time, since a child listing read
        while a thread exits can miss a child that still runs."""
        with self._poll_lock:
            self._poll()
        self._tell_ends()

    def _poll(self) -> None:
        import psutil

        now = time.monotonic()
        if self._own_argv is None:
            self._own_argv = psutil.Process().cmdline()
        for pid in _children() - self._seen:
            try:
                process = psutil.Process(pid)
                argv = process.cmdline()
            except psutil.Error:
                self._seen.add(pid)
                continue
            if argv == self._own_argv:
                continue  # forked, not yet exec'd: its command line is still ours; look again
            self._seen.add(pid)
            folder = task_folder(argv, self.root)
            with self._lock:
                waiting = next((a for a in self.attempts if a.folder == folder and a.process is None
                                and a.finished is None), None)
                if waiting is not None:
                    waiting.process = process
        with self._lock:
            for attempt in self.attempts:
                if attempt.finished is None and attempt.process is not None and not attempt.process.is_running():
                    attempt.finished, attempt.succeeded = now, (attempt.folder / EXECUTOR_OUTPUT).is_file()

    def _settle(self, now: float) -> None:
        """Each attempt ends by the next start in the same kfp.local thread (it waits for
        one task before it starts the next), else by the end of the run: the bound for one
        whose process came and went between two looks, and a cap on a look's lag. Such an
        attempt succeeded when it is its folder's last (a retry follows only a failure)
        and the folder holds executor_output.json."""
        last = {a.folder: a for a in sorted(self.attempts, key=lambda a: a.started)}
        for attempt in self.attempts:
            later = [a.started for a in self.attempts if a.thread == attempt.thread and a.started > attempt.started]
            bound = min(later, default=now)
            if attempt.finished is None:
                attempt.finished = bound
                attempt.succeeded = last[attempt.folder] is attempt and (attempt.folder / EXECUTOR_OUTPUT).is_file()
            else:
                attempt.finished = min(attempt.finished, bound)


def steps_from_attempts(attempts: list[_Attempt], exceptions: list[tuple[float, list[str]]]) -> list[StepRun]:
    """One StepRun per task name, in the order they started: a folder's last attempt
    decides it (retries), a loop's iterations are one step that failed when any did; a
    failed step's message is the last exception printed while it ran."""
    last: dict[Path, _Attempt] = {}
    first_start: dict[Path, float] = {}
    for a in sorted(attempts, key=lambda a: a.started):
        first_start.setdefault(a.folder, a.started)
        last[a.folder] = a
    steps: dict[str, StepRun] = {}
    for folder, a in sorted(last.items(), key=lambda kv: first_start[kv[0]]):
        finished = a.finished if a.finished is not None else a.started
        step = steps.setdefault(folder.name, StepRun(folder.name, "SUCCESS", first_start[folder], finished))
        step.started, step.finished = min(step.started, first_start[folder]), max(step.finished, finished)
        if not a.succeeded:
            step.status = "FAILURE"
            said = [" ".join(lines) for t, lines in exceptions if a.started <= t <= finished]
            step.message = said[-1] if said else step.message
    return list(steps.values())


def upstream_tasks(spec: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """For each task (a task folder's name), the tasks that have ended whenever it starts:
    those it depends on in the spec, directly or through the DAGs around it (a loop's
    iteration waits for what the loop waits for), a DAG standing for every task inside
    it. A component used by several tasks keeps only what all its uses wait for."""
    components = spec.get("components", {})

    def inner_dag(t: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return components.get(t.get("componentRef", {}).get("name", ""), {}).get("dag")

    def leaves(t: Mapping[str, Any]) -> set[str]:
        dag = inner_dag(t)
        if dag is None:
            return {t.get("componentRef", {}).get("name", "").removeprefix("comp-")}
        return set().union(*(leaves(u) for u in dag.get("tasks", {}).values()))

    found: dict[str, frozenset[str]] = {}

    def walk(dag: Mapping[str, Any], waited: frozenset[str]) -> None:
        tasks = dag.get("tasks", {})
        for t in tasks.values():
            deps = set(waited).union(*(leaves(tasks[d]) for d in t.get("dependentTasks", []) if d in tasks))
            if (inner := inner_dag(t)) is not None:
                walk(inner, frozenset(deps))
            else:
                name = t.get("componentRef", {}).get("name", "").removeprefix("comp-")
                found[name] = found[name] & deps if name in found else frozenset(deps)

    walk(spec.get("root", {}).get("dag", {}), frozenset())
    return found


def dag_path(spec: Mapping[str, Any], task: str) -> list[str]:
    """The DAG tasks around ``task`` (a task folder's name: its component's name without
    ``comp-``), innermost first, as kfp names them when a run fails: ``['export-plan',
    'export', 'condition-2', ...]``. A component used by several tasks gives the first
    path in the spec's order; ``[task]`` when the spec does not hold it."""
    components = spec.get("components", {})

    def walk(dag: Mapping[str, Any], outer: list[str]) -> list[str] | None:
        for name, t in dag.get("tasks", {}).items():
            ref = t.get("componentRef", {}).get("name", "")
            inner = components.get(ref, {}).get("dag")
            if inner is not None:
                if (found := walk(inner, [name, *outer])) is not None:
                    return found
            elif ref == f"comp-{task}":
                return [name, *outer]
        return None

    return walk(spec.get("root", {}).get("dag", {}), []) or [task]


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """Sets ``env`` in ``os.environ`` (inherited by kfp.local's subprocesses) and
    restores the previous values afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_pipeline_spec(path: str | Path) -> dict[str, Any]:
    """The PipelineSpec of a compiled pipeline YAML, as a dict."""
    from tune2serve.pipelines.compile import load_spec_dict

    return load_spec_dict(Path(path))


def promote_pipeline_spec() -> Any:
    """The PipelineSpec of ``promote_checkpoint`` (what ``tune2serve compile`` writes)."""
    from tune2serve.pipelines.promote import promote_checkpoint

    return promote_checkpoint.pipeline_spec


def spec_dict(spec: Any) -> dict[str, Any]:
    """A PipelineSpec (proto, or the dict of a compiled YAML or of a PipelineJob) as a
    dict whose integer parameters hold ints: in a protobuf Struct, and so in JSON and in
    compiled YAML, every number is a double, which kfp.local's type checks refuse."""
    if not isinstance(spec, Mapping):
        from google.protobuf import json_format

        spec = json_format.MessageToDict(spec)
    return dict(_integers_back(spec))


def _integers_back(node: Any) -> Any:
    if isinstance(node, list):
        return [_integers_back(v) for v in node]
    if not isinstance(node, Mapping):
        return node
    out = {k: _integers_back(v) for k, v in node.items()}
    if out.get("parameterType") in _INT_TYPES and isinstance(out.get("defaultValue"), float):
        out["defaultValue"] = int(out["defaultValue"])
    return out


def _arguments(spec: Mapping[str, Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The run's arguments, integer parameters given as whole doubles made ints."""
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    out = {}
    for key, value in arguments.items():
        if declared.get(key, {}).get("parameterType") in _INT_TYPES and isinstance(value, float) and value.is_integer():
            value = int(value)
        out[key] = value
    return out


def run_pipeline(
    spec: Any,
    arguments: Mapping[str, Any],
    *,
    pipeline_root: str | Path,
    env: Mapping[str, str] | None = None,
    echo: TextIO | None = None,
    progress: Progress | None = None,
) -> PipelineRun:
    """Runs ``spec`` with kfp.local's SubprocessRunner in this Python environment.

    Args:
        spec: a PipelineSpec: a proto (``promote_pipeline_spec``, ``component.pipeline_spec``)
            or a dict (``load_pipeline_spec``, a PipelineJob's ``pipelineSpec``).
        arguments: the pipeline's parameters.
        pipeline_root: a folder of its own for this run (kfp.local writes the run's
            outputs under ``<pipeline_root>/<run name>/``); made when missing.
        env: variables the steps need (the local stack's ``env()``), set for the run.
        echo: where to copy kfp.local's full output as it comes (None: log file only).
        progress: called as each task process starts and ends (``print_progress``), from
            kfp.local's threads and the watcher's; an end seen only when the run is over
            (a task that came and went between two looks) is told then.

    Returns:
        The run, failed or not (a failed step does not raise here).
    """
    from kfp import components, local

    from tune2serve.pipelines import local_custom_job

    # GCPC's custom-job launcher (a container component) as a task kfp.local runs here,
    # against the stack's customJobs API; its project and region are the run's
    spec = local_custom_job.runnable_locally(spec_dict(spec))
    env = {**_run_location(arguments), **(env or {})}
    pipeline = components.load_component_from_text(json.dumps(spec))
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in root.iterdir()}
    log_path = root / "pipeline.log"
    started = time.monotonic()
    raised: RuntimeError | None = None
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    # kfp.local swaps builtins.print for an indenting one around each task, from several
    # threads at once in a ParallelFor, and can leave it swapped: put the real one back.
    real_print = builtins.print
    with open(log_path, "a", encoding="utf-8") as log, environment(dict(env or {})), \
            _TaskWatcher(root, progress, upstream_tasks(spec)) as watcher:
        tap = _OutputTap(log, echo)
        try:
            with contextlib.redirect_stdout(tap), warnings.catch_warnings():
                # kfp.local warns that our image name lacks "python"; the steps run in this
                # environment by design (use_venv=False), so the warning is noise here.
                warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
                warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
                pipeline(**_arguments(spec, arguments))
        except RuntimeError as e:  # kfp.local's word that the run failed
            raised = e
        finally:
            builtins.print = real_print
            tap.write("\n")
    if raised is not None:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"{type(raised).__name__}: {_ANSI.sub('', str(raised))}\n")
    wall = time.monotonic() - started
    attempts = list(watcher.attempts)
    steps = steps_from_attempts(attempts, tap.exceptions)
    run_name = _run_name(root, attempts, before)
    failed = next((s for s in steps if s.status == "FAILURE"), None)
    return PipelineRun(
        run_name=run_name,
        run_dir=root / run_name,
        succeeded=raised is None and failed is None,
        steps=steps,
        log_path=log_path,
        wall_s=wall,
        failed_tasks=dag_path(spec, failed.task) if failed is not None else [],
    )


def _run_location(arguments: Mapping[str, Any]) -> dict[str, str]:
    """What Vertex AI resolves ``{{$.pipeline_google_cloud_project_id}}`` / ``_location``
    to (the run's own project and region), from the run's ``project`` / ``region``
    parameters when it has them."""
    from tune2serve.pipelines.local_custom_job import LOCATION_ENV, PROJECT_ENV

    names = {"project": PROJECT_ENV, "region": LOCATION_ENV}
    return {env: str(arguments[name]) for name, env in names.items() if isinstance(arguments.get(name), str)}


def _run_name(root: Path, attempts: list[_Attempt], before: set[str]) -> str:
    """The run's folder under the root: where its tasks wrote, else the one folder made."""
    for a in attempts:
        return a.folder.relative_to(root).parts[0]
    made = sorted({p.name for p in root.iterdir() if p.is_dir()} - before)
    return made[-1] if made else ""


def timing_table(run: PipelineRun, extra: Mapping[str, float] | None = None) -> str:
    """A per-step timing breakdown, one line a step, for people to read."""
    rows = [(name, secs, "") for name, secs in (extra or {}).items()]
    rows += [(s.task, s.seconds, s.status.lower()) for s in run.steps]
    width = max((len(r[0]) for r in rows), default=10)
    lines = [f"  {name:<{width}}  {secs:7.1f} s  {status}".rstrip() for name, secs, status in rows]
    steps_total = sum(s.seconds for s in run.steps)
    lines.append(f"  {'pipeline (kfp.local)':<{width}}  {run.wall_s:7.1f} s  "
                 f"(steps {steps_total:.1f} s, orchestration {max(0.0, run.wall_s - steps_total):.1f} s)")
    return "\n".join(lines)


__all__ = [
    "ENV_NAMES",
    "PipelineRun",
    "Progress",
    "StepEvent",
    "StepRun",
    "dag_path",
    "environment",
    "load_pipeline_spec",
    "print_progress",
    "progress_line",
    "promote_pipeline_spec",
    "run_pipeline",
    "spec_dict",
    "steps_from_attempts",
    "task_folder",
    "timing_table",
    "upstream_tasks",
]
