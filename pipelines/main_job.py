"""The main job: a full promotion in one command (``tune2serve run``).

With no SOURCE it is the demo: make a tiny base model and a LoRA adapter tuned to answer
golden prompts the base does not, start the local stack, upload the tuning output to the
stack's bucket, and run the compiled pipeline with kfp.local. It ends with the tuned
model serving on a local endpoint (promoted onto the endpoint of the previous demo run,
when that still serves), smoke-tested, with its URL, a ``curl`` line and the reports.

With SOURCE it runs the same pipeline on a user's own tuning output: against the local
stack by default, or against Vertex AI with ``--project/--region`` (Application Default
Credentials; the steps still run here, under kfp.local).

A failed run raises ``PromotionError`` with the failing step and its message (exit 1);
the pipeline's exit handler has already rolled back, so the model that served before
still serves. Every run prints a per-step timing breakdown.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tune2serve.components.errors import PromotionError, UsageError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.ranges import check_parameter_values
from tune2serve.components.smoke_test.golden import load_golden
from tune2serve.components.user_input import read_text_file
from tune2serve.components.vertex.machine_spec import parse_machine_spec
from tune2serve.pipelines import kfp_local

_log = get_logger("run")

# Report artifacts worth a person's time: (task, artifact name) → file name under reports/.
REPORTS = {
    ("validate", "report_html"): "validate.html",
    ("validate", "report_md"): "validate.md",
    ("smoke-test", "report"): "smoke-test.md",
    ("smoke-test", "report_html"): "smoke-test.html",
    ("verify-traffic", "report_html"): "verify-traffic.html",
    ("verify-traffic", "report_md"): "verify-traffic.md",
    ("finalize", "report"): "finalize.md",
}
DEMO_PROMPT = "what is the capital of france"


@dataclass
class JobOptions:
    """What ``tune2serve run`` was asked for; None/"" mean "not given"."""

    source: str | None = None
    base_model: str = ""
    export_dest: str | None = None
    production_endpoint: str = ""
    project: str | None = None
    region: str | None = None
    golden_file: str | None = None
    checkpoint: str = "final"
    machine_type: str = ""
    accelerator_type: str = ""
    accelerator_count: int = 0
    canary_percent: int = 10
    steps: str = ""
    strict: bool = False
    home: str | None = None
    verbose: bool = False

    @property
    def cloud(self) -> bool:
        return self.project is not None


@dataclass
class JobResult:
    ok: bool
    run_name: str
    outcome: str  # promoted | verified | skipped (nothing to do; message says why) | rolled_back | failed | rejected
    endpoint: str = ""
    model: str = ""
    url: str = ""
    curl: str = ""
    failed_step: str | None = None
    message: str | None = None
    reports: dict[str, str] = field(default_factory=dict)
    log: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    timing_table: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "timing_table"}


class _Clock:
    """Wall time of the job's own phases (the pipeline's steps are timed by kfp_local)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def time(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            self.phases[name] = time.monotonic() - started


def _demo_inputs(home: Path) -> tuple[Path, Path]:
    """The demo's base model and tuned adapter, made once and kept under HOME/demo
    (training the adapter is the slow part; a finished folder is marked complete)."""
    from tune2serve.demo.tiny_models import make_tiny_model
    from tune2serve.demo.tuned_adapter import make_tuned_adapter

    base, adapter, done = home / "demo" / "base", home / "demo" / "tuning-output", home / "demo" / ".complete"
    if not done.is_file():
        shutil.rmtree(home / "demo", ignore_errors=True)
        make_tiny_model(base)
        make_tuned_adapter(base, adapter)
        done.write_text("base + adapter made\n", encoding="utf-8")
    return base, adapter


def upload_folder(local: Path, uri: str) -> str:
    """Copies a local folder to ``uri`` (gs://...) through the storage abstraction."""
    from tune2serve.components.checkpoint.storage import open_folder

    dest = open_folder(uri)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        dest.upload_file(path.relative_to(local).as_posix(), path)
    return uri


def _previous_demo_endpoint(home: Path, project: str, region: str) -> str:
    """The endpoint the last successful demo run left serving, if it still exists."""
    from tune2serve.components.errors import VertexError
    from tune2serve.components.vertex.clients import target
    from tune2serve.components.vertex.endpoints import get_endpoint

    path = home / "demo" / "serving.json"
    if not path.is_file():
        return ""
    name = str(json.loads(path.read_text(encoding="utf-8")).get("endpoint", ""))
    try:
        state = get_endpoint(target(project, region), name) if name else None
    except VertexError:
        state = None
    return name if state is not None and state.deployed_models else ""


def query_lines(endpoint: str, project: str, region: str, ca_file: str | None, cloud: bool) -> tuple[str, str]:
    """The chat-completions URL of a serving endpoint and a ``curl`` line that asks it
    the demo question (``--cacert`` for the local CA; a bearer token in the cloud)."""
    from tune2serve.components.vertex.clients import target
    from tune2serve.components.vertex.endpoints import get_endpoint
    from tune2serve.components.vertex.resources import endpoint_name

    state = get_endpoint(target(project, region), endpoint)
    name = endpoint_name(endpoint, project, region)
    url = f"https://{state.dedicated_endpoint_dns}/v1beta1/{name}/chat/completions"
    body = json.dumps({"messages": [{"role": "user", "content": DEMO_PROMPT}], "max_tokens": 16, "temperature": 0})
    auth = ' -H "Authorization: Bearer $(gcloud auth print-access-token)"' if cloud else ""
    cacert = f" --cacert {ca_file}" if ca_file and not cloud else ""
    return url, f"curl{cacert}{auth} -H 'Content-Type: application/json' -d '{body}' {url}"


def collect_reports(run: kfp_local.PipelineRun, dest: Path) -> dict[str, str]:
    """Copies the run's report artifacts to ``dest`` (HOME/reports/<run>/); returns
    report name → path, for the reports the steps wrote (a failed step writes its
    report before failing)."""
    found: dict[str, str] = {}
    for (task, artifact), filename in REPORTS.items():
        src = run.artifact(task, artifact)
        if src is not None and src.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / filename)
            found[filename] = str(dest / filename)
    return found


def pipeline_arguments(opts: JobOptions, *, source: str, base_model: str, export_dest: str, project: str,
                       region: str, golden: str, production_endpoint: str) -> dict[str, Any]:
    """The pipeline's parameters for this job (the rest keep their documented defaults)."""
    return {
        "source": source, "export_dest": export_dest, "project": project, "region": region,
        "base_model": base_model, "checkpoint": opts.checkpoint, "strict": opts.strict,
        "machine_type": opts.machine_type, "accelerator_type": opts.accelerator_type,
        "accelerator_count": opts.accelerator_count, "golden": golden,
        "production_endpoint": production_endpoint, "canary_percent": opts.canary_percent, "steps": opts.steps,
    }


def _nothing_to_do(run: kfp_local.PipelineRun) -> str | None:
    """discover's reason when it found nothing to promote (a successful no-op run)."""
    found = run.outputs("discover")
    return None if found.get("proceed", True) else str(found.get("reason", "nothing to do"))


def _outcome(run: kfp_local.PipelineRun) -> str:
    if run.succeeded:
        if _nothing_to_do(run) is not None:
            return "skipped"
        return str(run.outputs("verify-traffic").get("outcome", "verified"))
    failed = run.failed_step
    if failed is not None and failed.task == "reject":
        return "rejected"
    return "rolled_back" if run.step("deploy") is not None else "failed"


def run_job(opts: JobOptions, *, echo: TextIO | None = None) -> JobResult:
    """Runs one promotion end to end; see the module docstring.

    Raises:
        UsageError: flags that cannot work together (before anything starts).
        PromotionError: the local stack or the demo model could not be made.
    """
    from tune2serve.localstack.stack import LocalStack, resolve_home

    if opts.cloud and not opts.region:
        raise UsageError("--project needs --region (for example --region us-central1)")
    if opts.cloud and not (opts.export_dest or "").startswith("gs://"):
        raise UsageError("on Vertex AI give --export-dest gs://BUCKET/PREFIX: the deploy reads the export from GCS")
    if opts.source is None and opts.cloud:
        raise UsageError("the demo (no SOURCE) runs on the local stack only; give SOURCE with --project")
    check_parameter_values({"accelerator_count": opts.accelerator_count, "canary_percent": opts.canary_percent,
                            "steps": opts.steps})
    # the rule validate and deploy read the three by, said before anything starts
    parse_machine_spec(opts.machine_type, opts.accelerator_type, opts.accelerator_count)
    home = resolve_home(opts.home)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    clock = _Clock()
    golden = read_text_file(opts.golden_file, "--golden") if opts.golden_file else ""
    if golden:
        load_golden(golden, f"--golden {opts.golden_file}")  # a bad file is a usage error before anything starts

    env: dict[str, str] = {}
    if opts.cloud:
        project, region, bucket = str(opts.project), str(opts.region), ""
    else:
        stack = LocalStack(home)
        try:
            clock.time("local stack up", stack.up)
        except RuntimeError as e:  # StackError: which process, and where its log is
            raise PromotionError(f"the local stack did not start: {e}") from e
        env = stack.env()
        config = stack.config
        project, region, bucket = opts.project or config.project, opts.region or config.region, config.bucket

    with kfp_local.environment(env):
        source, base_model, production = opts.source or "", opts.base_model, opts.production_endpoint
        if opts.source is None:  # the demo
            base, adapter = clock.time("demo model + adapter", _demo_inputs, home)
            prefix = f"gs://{bucket}/demo/{stamp}"
            clock.time("upload tuning output", lambda: (upload_folder(base, f"{prefix}/base"),
                                                        upload_folder(adapter, f"{prefix}/tuning-output")))
            source, base_model = f"{prefix}/tuning-output", f"{prefix}/base"
            if not golden:
                from tune2serve.demo.tuned_adapter import golden_jsonl

                golden = golden_jsonl()
            production = production or _previous_demo_endpoint(home, project, region)
        export_dest = opts.export_dest or f"gs://{bucket}/exports/{stamp}"
        args = pipeline_arguments(opts, source=source, base_model=base_model, export_dest=export_dest, project=project, region=region,
                                  golden=golden, production_endpoint=production)
        log_event(_log, "run.start", f"running the promote-checkpoint pipeline on {source}",
                  source=source, export_dest=export_dest, production_endpoint=production or None)
        run = kfp_local.run_pipeline(kfp_local.promote_pipeline_spec(), args,
                                     pipeline_root=home / "runs" / stamp, env=env, echo=echo)
        result = JobResult(ok=run.succeeded, run_name=run.run_name, outcome=_outcome(run), log=str(run.log_path))
        result.reports = collect_reports(run, home / "reports" / run.run_name)
        deployed = run.outputs("deploy")
        result.model = str(deployed.get("model", ""))
        if result.outcome == "skipped":
            result.message = _nothing_to_do(run)
        elif run.succeeded:
            result.endpoint = production or str(deployed.get("endpoint", ""))
            result.url, result.curl = query_lines(result.endpoint, project, region, env.get("REQUESTS_CA_BUNDLE"),
                                                  opts.cloud)
            if opts.source is None:
                (home / "demo" / "serving.json").write_text(json.dumps({"endpoint": result.endpoint}),
                                                            encoding="utf-8")
        else:
            failed = run.failed_step
            result.failed_step = failed.task if failed else (run.failed_tasks[0] if run.failed_tasks else None)
            result.message = (failed.message if failed else None) or f"see the log {run.log_path}"
    result.timings = {**clock.phases, **{s.task: round(s.seconds, 2) for s in run.steps},
                      "pipeline": round(run.wall_s, 2)}
    result.timing_table = kfp_local.timing_table(run, clock.phases)
    log_event(_log, "run.end", f"run {run.run_name}: {result.outcome}", outcome=result.outcome,
              endpoint=result.endpoint or None, log=str(run.log_path))
    return result


def summary_text(result: JobResult) -> str:
    """What a person reads at the end of ``tune2serve run``."""
    lines = []
    if result.outcome == "skipped":
        lines += [f"run {result.run_name}: {result.message}", "nothing was deployed or changed"]
    elif result.ok:
        lines += [f"tuned model {result.outcome}: {result.model}", f"serving on {result.endpoint}",
                  f"URL:  {result.url}", f"try:  {result.curl}"]
    else:
        lines += [f"run {result.run_name} failed at step {result.failed_step}: {result.message}",
                  "nothing was promoted; the model that served before (if any) still serves"]
    if result.reports:
        lines.append("reports:")
        lines += [f"  {path}" for path in result.reports.values()]
    if result.log:
        lines.append(f"pipeline log: {result.log}")
    lines += ["timings:", result.timing_table]
    return "\n".join(lines)


__all__ = ["JobOptions", "JobResult", "collect_reports", "pipeline_arguments", "query_lines", "run_job",
           "summary_text", "upload_folder"]
