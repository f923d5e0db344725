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
import shlex
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
    ("quality-gate", "report_md"): "quality-gate.md",
    ("quality-gate", "report_html"): "quality-gate.html",
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
    eval_set_file: str | None = None  # the quality gate's cases against production_endpoint (JSON Lines)
    checkpoint: str = "final"
    machine_type: str = ""
    accelerator_type: str = ""
    accelerator_count: int = 0
    canary_percent: int = 10
    steps: str = ""
    strict: bool = False
    home: str | None = None
    verbose: bool = False
    again: bool = False  # promote the demo's weights even when they already serve

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
    export: str = ""  # where the export was written (the pipeline's export_dest)
    url: str = ""
    curl: str = ""
    failed_step: str | None = None
    message: str | None = None
    reports: dict[str, str] = field(default_factory=dict)
    log: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    timing_table: str = ""
    reports_dir: str = ""
    next_steps: list[str] = field(default_factory=list)  # commands a person may run next

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "timing_table"}


# What a step waits for, said on its progress line as it starts (the slow ones).
STEP_WAITS = {
    "deploy": "waits for Vertex AI's deploy operation, then for the endpoint's replicas to answer "
              "(model servers loading the export)",
    "smoke-test": "waits out the endpoint's warm-up, then sends every request kind and the golden prompts",
    "verify-traffic": "waits for enough answers at each canary share to judge the split, then shifts traffic",
    "finalize": "rolls back and cleans up if any step failed",
}


class _Clock:
    """Wall time of the job's own phases (the pipeline's steps are timed by kfp_local),
    each told as a progress line as it starts and ends."""

    def __init__(self, progress: kfp_local.Progress | None = None) -> None:
        self.phases: dict[str, float] = {}
        self.progress = progress

    def time(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        if self.progress is not None:
            self.progress(kfp_local.StepEvent(name, "start"))
        ok = False
        try:
            result = fn(*args, **kwargs)
            ok = True
            return result
        finally:
            self.phases[name] = time.monotonic() - started
            if self.progress is not None:
                self.progress(kfp_local.StepEvent(name, "end", seconds=self.phases[name], succeeded=ok))


def demo_recipe() -> str:
    """What the demo's models are made by (the tiny model's spec, the adapter's training
    settings and golden cases), as HOME/demo/.complete records it: a folder made by
    another recipe — say, the head size 16 models vLLM cannot serve — is made again."""
    from tune2serve.demo.tiny_models import TinySpec
    from tune2serve.demo.tuned_adapter import make_tuned_adapter

    return f"base + adapter made: {TinySpec()!r}, {json.dumps(make_tuned_adapter.__kwdefaults__, sort_keys=True)}\n"


def _demo_inputs(home: Path) -> tuple[Path, Path]:
    """The demo's base model and tuned adapter, made once and kept under HOME/demo
    (training the adapter is the slow part; a finished folder is marked complete with
    its recipe)."""
    from tune2serve.demo.tiny_models import make_tiny_model
    from tune2serve.demo.tuned_adapter import make_tuned_adapter

    base, adapter, done = home / "demo" / "base", home / "demo" / "tuning-output", home / "demo" / ".complete"
    recipe = demo_recipe()
    if not done.is_file() or done.read_text(encoding="utf-8") != recipe:
        shutil.rmtree(home / "demo", ignore_errors=True)
        make_tiny_model(base)
        make_tuned_adapter(base, adapter)
        done.write_text(recipe, encoding="utf-8")
    return base, adapter


def upload_folder(local: Path, uri: str) -> str:
    """Copies a local folder to ``uri`` (gs://...) through the storage abstraction."""
    from tune2serve.components.checkpoint.storage import open_folder

    dest = open_folder(uri)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        dest.upload_file(path.relative_to(local).as_posix(), path)
    return uri


def weights_digest(*folders: Path) -> str:
    """The demo's weights (base model and adapter, every file) as one digest: a
    ``Manifest`` of them, digested as an export's manifest is. Unchanged files, same digest."""
    from tune2serve.components.checkpoint.manifest import Manifest, ManifestEntry, sha256_file

    entries = [ManifestEntry(f"{i}/{p.relative_to(folder).as_posix()}", p.stat().st_size, sha256_file(p))
               for i, folder in enumerate(folders) for p in sorted(folder.rglob("*")) if p.is_file()]
    return Manifest(files=entries).digest()


def already_serving(home: Path, weights: str, project: str, region: str) -> Any:
    """The promotion record of the demo run that promoted these same weights, when what it
    promoted still serves: HOME/demo/serving.json names the weights, the export and the
    endpoint; the record beside the export says which model was promoted and the export's
    manifest digest, which must still be the export's; the endpoint must still serve that
    model. None otherwise (then the demo promotes)."""
    from tune2serve.components.checkpoint.manifest import read_manifest
    from tune2serve.components.checkpoint.storage import open_folder
    from tune2serve.components.errors import VertexError
    from tune2serve.components.promotion_record.promotion_record import read_promotion_record
    from tune2serve.components.vertex.clients import target
    from tune2serve.components.vertex.endpoints import get_endpoint

    path = home / "demo" / "serving.json"
    try:
        served = json.loads(path.read_text(encoding="utf-8"))
        if served.get("weights") != weights or not served.get("export"):
            return None
        record = read_promotion_record(str(served["export"]))
        manifest = read_manifest(open_folder(str(served["export"])))
    except (OSError, ValueError, PromotionError):
        return None
    if record is None or manifest is None or record.manifest_digest != manifest.digest():
        return None
    try:
        state = get_endpoint(target(project, region), record.endpoint)
    except VertexError:
        return None
    live = {d.model.split("@", 1)[0] for d in state.deployed_models if state.traffic_split.get(d.id)}
    return record if record.model.split("@", 1)[0] in live else None


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
                       region: str, golden: str, production_endpoint: str, eval_set: str = "") -> dict[str, Any]:
    """The pipeline's parameters for this job (the rest keep their documented defaults)."""
    return {
        "source": source, "export_dest": export_dest, "project": project, "region": region,
        "base_model": base_model, "checkpoint": opts.checkpoint, "strict": opts.strict,
        "machine_type": opts.machine_type, "accelerator_type": opts.accelerator_type,
        "accelerator_count": opts.accelerator_count, "golden": golden,
        "production_endpoint": production_endpoint, "canary_percent": opts.canary_percent, "steps": opts.steps,
        "eval_set": eval_set,
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


def run_job(opts: JobOptions, *, echo: TextIO | None = None, progress: TextIO | None = None) -> JobResult:
    """Runs one promotion end to end; see the module docstring. ``progress``: where one
    line per phase and pipeline step is written as it starts and ends (None: nowhere).

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
    clock = _Clock(kfp_local.print_progress(progress, STEP_WAITS) if progress is not None else None)
    golden = read_text_file(opts.golden_file, "--golden") if opts.golden_file else ""
    if golden:
        load_golden(golden, f"--golden {opts.golden_file}")  # a bad file is a usage error before anything starts
    eval_set = read_text_file(opts.eval_set_file, "--eval-set") if opts.eval_set_file else ""
    if eval_set:
        from tune2serve.components.quality_gate.evalset import parse_eval_set

        parse_eval_set(eval_set, f"--eval-set {opts.eval_set_file}")  # the same: before anything starts

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
            weights = weights_digest(base, adapter)
            record = None if opts.again else already_serving(home, weights, project, region)
            if record is not None:
                return _serving_already(opts, record, home, clock, project, region, env)
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
                                  golden=golden, production_endpoint=production, eval_set=eval_set)
        log_event(_log, "run.start", f"running the promote-checkpoint pipeline on {source}",
                  source=source, export_dest=export_dest, production_endpoint=production or None)
        run = kfp_local.run_pipeline(kfp_local.promote_pipeline_spec(), args, pipeline_root=home / "runs" / stamp,
                                     env=env, echo=echo, progress=clock.progress)
        result = JobResult(ok=run.succeeded, run_name=run.run_name, outcome=_outcome(run), log=str(run.log_path),
                           export=export_dest)
        result.reports = collect_reports(run, home / "reports" / run.run_name)
        result.reports_dir = str(home / "reports" / run.run_name) if result.reports else ""
        deployed = run.outputs("deploy")
        result.model = str(deployed.get("model", ""))
        if result.outcome == "skipped":
            result.message = _nothing_to_do(run)
        elif run.succeeded:
            result.endpoint = production or str(deployed.get("endpoint", ""))
            result.url, result.curl = query_lines(result.endpoint, project, region, env.get("REQUESTS_CA_BUNDLE"),
                                                  opts.cloud)
            if opts.source is None:  # what already_serving reads on the next demo run
                served = {"endpoint": result.endpoint, "export": export_dest, "weights": weights}
                (home / "demo" / "serving.json").write_text(json.dumps(served), encoding="utf-8")
        else:
            failed = run.failed_step
            result.failed_step = failed.task if failed else (run.failed_tasks[0] if run.failed_tasks else None)
            result.message = (failed.message if failed else None) or f"see the log {run.log_path}"
    result.timings = {**clock.phases, **{s.task: round(s.seconds, 2) for s in run.steps},
                      "pipeline": round(run.wall_s, 2)}
    result.timing_table = kfp_local.timing_table(run, clock.phases)
    result.next_steps = next_steps(opts, result, home)
    log_event(_log, "run.end", f"run {run.run_name}: {result.outcome}", outcome=result.outcome,
              endpoint=result.endpoint or None, log=str(run.log_path))
    return result


def _serving_already(opts: JobOptions, record: Any, home: Path, clock: _Clock, project: str, region: str,
                     env: dict[str, str]) -> JobResult:
    """The demo's answer when its weights already serve: nothing exported, deployed or
    shifted; where they serve, and how to promote them again anyway."""
    result = JobResult(ok=True, run_name="", outcome="skipped", endpoint=record.endpoint, model=record.model,
                       export=record.export)
    result.message = (f"already serving these weights: model {record.model} on {record.endpoint} "
                      f"(export {record.export}, manifest digest {str(record.manifest_digest)[:12]}, promoted "
                      f"{record.time}); nothing was exported, deployed or changed")
    result.url, result.curl = query_lines(record.endpoint, project, region, env.get("REQUESTS_CA_BUNDLE"), False)
    result.timings = dict(clock.phases)
    result.next_steps = next_steps(opts, result, home)
    log_event(_log, "run.already_serving", result.message, endpoint=record.endpoint, model=record.model,
              export=record.export)
    return result


def next_steps(opts: JobOptions, result: JobResult, home: Path) -> list[str]:
    """What a person may do after a run, as commands to paste (with the flags they gave)."""
    from tune2serve.localstack.hints import local_command

    home_flag = f" --home {shlex.quote(opts.home)}" if opts.home else ""
    steps = []
    if result.curl:
        steps.append("query it: the curl line above (any OpenAI-style chat client works on the URL)")
    if opts.source is None:
        steps.append(f"promote your own checkpoint: tune2serve run PATH_OR_GS_URI [--base-model BASE]{home_flag}")
        if result.outcome == "skipped":
            steps.append(f"promote these weights again anyway: tune2serve run --again{home_flag}")
    if not opts.cloud:
        steps.append(f"stop the local stack: {local_command('down', home)}")
    return steps


def summary_text(result: JobResult) -> str:
    """What a person reads at the end of ``tune2serve run``."""
    lines = []
    if result.outcome == "skipped" and result.endpoint:
        lines += [result.message or "", f"serving on {result.endpoint}", f"URL:  {result.url}",
                  f"try:  {result.curl}"]
    elif result.outcome == "skipped":
        lines += [f"run {result.run_name}: {result.message}", "nothing was deployed or changed"]
    elif result.ok:
        lines += [f"tuned model {result.outcome}: {result.model}", f"serving on {result.endpoint}",
                  f"URL:  {result.url}", f"try:  {result.curl}"]
    else:
        lines += [f"run {result.run_name} failed at step {result.failed_step}: {result.message}",
                  "nothing was promoted; the model that served before (if any) still serves"]
    if result.reports:
        lines.append(f"reports (in {result.reports_dir}):")
        lines += [f"  {path}" for path in result.reports.values()]
    if result.log:
        lines.append(f"pipeline log: {result.log}")
    if result.timing_table:
        lines += ["timings:", result.timing_table]
    if result.next_steps:
        lines.append("next:")
        lines += [f"  {step}" for step in result.next_steps]
    return "\n".join(lines)


__all__ = ["STEP_WAITS", "JobOptions", "JobResult", "already_serving", "collect_reports", "next_steps",
           "pipeline_arguments", "query_lines", "run_job", "summary_text", "upload_folder", "weights_digest"]
