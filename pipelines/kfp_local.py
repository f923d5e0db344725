"""Runs the compiled promotion pipeline with ``kfp.local`` in the current environment.

The same PipelineSpec that Vertex AI Pipelines runs (the compiled YAML, or the pipeline
function's spec, which a test holds equal to it) is executed by kfp.local's
``SubprocessRunner(use_venv=False)``: each step is a subprocess of this Python, with the
installed tune2serve package, that inherits this process's environment. The local
stack's settings (STORAGE_EMULATOR_HOST, TUNE2SERVE_VERTEX_API_ENDPOINT,
REQUESTS_CA_BUNDLE, SSL_CERT_FILE) are put into ``os.environ`` for the duration of the
run and restored afterwards.

kfp.local prints its own progress and every step's output on stdout. That stream is
captured here line by line (to a log file, and to ``echo`` when given), which gives:
- per-step timings (from kfp.local's "Executing task" / "finished with status" lines),
- the failing step and its message (the last exception line the step printed),
and keeps stdout free for a command's own result (``--json`` prints one object).

Outputs are read back from kfp.local's pipeline root, laid out as
``<pipeline_root>/<run name>/<task>/executor_output.json`` and ``.../<task>/<artifact>``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# What kfp.local writes on stdout around each step (colour codes stripped first).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_FINISH = re.compile(r"Task '([^']+)' finished with status (SUCCESS|FAILURE)")
_SKIP = re.compile(r"Skipping task ([\w-]+): upstream")
_PIPELINE_DONE = re.compile(r"Pipeline '([^']+)' finished with status (SUCCESS|FAILURE)")
_INNER_FAILED = re.compile(r"Inner task failed: (.+)\.$")
# The last line of a Python traceback: "package.module.SomeError: message".
_EXCEPTION = re.compile(r"^\s*((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)): (.*)$")

ENV_NAMES = ("STORAGE_EMULATOR_HOST", "TUNE2SERVE_VERTEX_API_ENDPOINT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


@dataclass
class StepRun:
    """One task as kfp.local ran it."""

    task: str
    status: str = "RUNNING"  # SUCCESS | FAILURE | SKIPPED | RUNNING
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
        path = self.run_dir / task / "executor_output.json"
        if not path.is_file():
            return {}
        return dict(json.loads(path.read_text(encoding="utf-8")).get("parameterValues", {}))

    def artifact(self, task: str, name: str) -> Path | None:
        """The local file of a task's output artifact, when the step wrote it."""
        path = self.run_dir / task / name
        return path if path.exists() else None


class _LineTap(io.TextIOBase):
    """A text stream that splits what is written into lines, timestamps them and hands
    them to a callback, copying everything to the log (and ``echo``)."""

    def __init__(self, on_line: Any, log: TextIO, echo: TextIO | None) -> None:
        super().__init__()
        self._on_line = on_line
        self._log = log
        self._echo = echo
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        if self._echo is not None:
            self._echo.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        now = time.monotonic()
        for line in lines:
            self._on_line(_ANSI.sub("", line), now)
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        if self._echo is not None:
            self._echo.flush()


class _StepTracker:
    """Turns kfp.local's output lines into StepRun records."""

    def __init__(self) -> None:
        self.steps: list[StepRun] = []
        self.current: StepRun | None = None
        self.failed_tasks: list[str] = []
        self._exception_lines: list[str] = []

    def __call__(self, line: str, now: float) -> None:
        if m := _START.search(line):
            step = next((s for s in self.steps if s.task == m.group(1)), None)
            if step is None:  # a retry keeps the first start time
                step = StepRun(task=m.group(1), started=now)
                self.steps.append(step)
            step.status = "RUNNING"
            self.current, self._exception_lines = step, []
        elif m := _FINISH.search(line):
            step = next((s for s in self.steps if s.task == m.group(1)), None)
            if step is not None:
                step.status, step.finished = m.group(2), now
                if step.status == "FAILURE":
                    step.message = " ".join(self._exception_lines).strip() or None
            self.current = None
        elif m := _SKIP.search(line):
            self.steps.append(StepRun(task=m.group(1), status="SKIPPED", started=now, finished=now))
        elif m := _INNER_FAILED.search(line):
            self.failed_tasks = [t.strip(" '") for t in m.group(1).split(" inside ")]
        elif self.current is not None:
            if m := _EXCEPTION.match(line):
                self._exception_lines = [f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}"]
            elif self._exception_lines and line.strip() and not line.lstrip().startswith(("[KFP", "Traceback")):
                # continuation lines of a multi-line message, up to kfp's next line
                if not re.match(r"^\d\d:\d\d:\d\d\.\d+ - ", line):
                    self._exception_lines.append(line.strip())


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


def load_pipeline_spec(path: str | Path) -> Any:
    """The PipelineSpec proto of a compiled pipeline YAML."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from tune2serve.pipelines.compile import load_spec_dict

    return json_format.ParseDict(load_spec_dict(Path(path)), pipeline_spec_pb2.PipelineSpec())


def promote_pipeline_spec() -> Any:
    """The PipelineSpec of ``promote_checkpoint`` (what ``tune2serve compile`` writes)."""
    from tune2serve.pipelines.promote import promote_checkpoint

    return promote_checkpoint.pipeline_spec


def run_pipeline(
    spec: Any,
    arguments: Mapping[str, Any],
    *,
    pipeline_root: str | Path,
    env: Mapping[str, str] | None = None,
    echo: TextIO | None = None,
) -> PipelineRun:
    """Runs ``spec`` with kfp.local's SubprocessRunner in this Python environment.

    Args:
        spec: a PipelineSpec (``load_pipeline_spec`` or ``promote_pipeline_spec``).
        arguments: the pipeline's parameters.
        pipeline_root: a folder of its own for this run (kfp.local writes the run's
            outputs under ``<pipeline_root>/<run name>/``); made when missing.
        env: variables the steps need (the local stack's ``env()``), set for the run.
        echo: where to copy kfp.local's full output as it comes (None: log file only).

    Returns:
        The run, failed or not (a failed step does not raise here).
    """
    from kfp import local
    from kfp.local import pipeline_orchestrator

    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in root.iterdir()}
    log_path = root / "pipeline.log"
    tracker = _StepTracker()
    started = time.monotonic()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=False)
    with open(log_path, "a", encoding="utf-8") as log, environment(dict(env or {})):
        tap = _LineTap(tracker, log, echo)
        with contextlib.redirect_stdout(tap), warnings.catch_warnings():
            # kfp.local warns that our image name lacks "python"; the steps run in this
            # environment by design (use_venv=False), so the warning is noise here.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            pipeline_orchestrator.run_local_pipeline(pipeline_spec=spec, arguments=dict(arguments))
            tap.write("\n")
    wall = time.monotonic() - started
    made = sorted({p.name for p in root.iterdir() if p.is_dir()} - before)
    run_name = made[-1] if made else ""
    # kfp.local leaves finalize for last; a step that never finished (a crash of
    # kfp.local itself) counts as failed.
    for s in tracker.steps:
        if s.status == "RUNNING":
            s.status, s.finished = "FAILURE", time.monotonic()
    succeeded = not tracker.failed_tasks and all(s.status != "FAILURE" for s in tracker.steps)
    return PipelineRun(
        run_name=run_name,
        run_dir=root / run_name,
        succeeded=succeeded,
        steps=tracker.steps,
        log_path=log_path,
        wall_s=wall,
        failed_tasks=tracker.failed_tasks,
    )


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
    "StepRun",
    "environment",
    "load_pipeline_spec",
    "promote_pipeline_spec",
    "run_pipeline",
    "timing_table",
]
