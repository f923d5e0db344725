"""The promotion pipeline's parameters, documented once.

KFP turns a pipeline function's Google-style "Args:" docstring into the input
descriptions that the compiled spec carries and the Vertex AI UI shows when a person
starts a run. The gates of pipelines/promote.py are sub-pipelines that re-declare the
parameters they pass on, so each description lives here, once, and ``documented``
writes the docstrings from it.
"""

import inspect
from collections.abc import Callable
from typing import Any

from tune2serve.components.ranges import describe_parameter

PARAMETER_DOCS: dict[str, str] = {
    'source': (
        "the tuning job's output: a gs:// prefix such as gs://BUCKET/tuning/run-7 (HF Trainer "
        'output, Vertex tuning output tree, full checkpoint or LoRA adapter) or a tuning job '
        'resource name projects/P/locations/L/tuningJobs/ID; on Vertex AI it must be one of '
        'those (a local path works only for runs on this machine, tune2serve run). For '
        'scheduled runs, newest:gs://BUCKET/PREFIX promotes the newest completed tuning '
        'output under PREFIX (one folder per tuning run), and the run ends as a successful '
        'no-op that says why when there is none or it was already promoted.'
    ),
    'export_dest': (
        'gs:// prefix where the deployable export is written, for example '
        'gs://BUCKET/exports/run-7 (a local path works only for runs on this machine); it must '
        'not hold another export. With source newest:PREFIX it is a prefix shared by the '
        "schedule's runs: each export goes to export_dest/<tuning run folder>, with its "
        'promotion record <export>.promotion.json beside it. Nothing is written here when '
        'source already is a deployable gs:// folder: export passes it through and the '
        'source itself is deployed.'
    ),
    'project': 'Google Cloud project that owns the endpoint and the model.',
    'region': 'Vertex AI region of the endpoint, for example us-central1.',
    'base_model': (
        'base model folder (gs://; a local path only for runs on this machine) when source is '
        'a LoRA adapter; it is also compared with the export by validate. Empty when source '
        'is a full checkpoint.'
    ),
    'checkpoint': 'which checkpoint of a training run to export: final, best, latest or a step number.',
    'dtype': 'dtype of the exported weights: auto (as trained), bfloat16, float16 or float32.',
    'max_shard_size': 'largest safetensors shard of the export, for example 5GB.',
    'export_workers': (
        'most export workers run in parallel, one per group of output shards (a '
        'dsl.ParallelFor); a model smaller than export_min_worker_size per worker gets '
        'fewer, a small model one.'
    ),
    'export_min_worker_size': (
        'smallest share of the model one export worker writes, for example 20GB: below it '
        'a worker costs more in start-up than it saves.'
    ),
    'export_cpu': (
        'vCPUs of each export worker (and of the commit step), for example 8; Vertex AI '
        'picks a machine with at least this many, and its network bandwidth grows with them.'
    ),
    'export_memory': (
        'memory of each export worker, for example 32G: flat in the model size (~1 GB) plus '
        'the LoRA adapter, which is read whole.'
    ),
    'export_machine_type': (
        'machine type of each export worker, for example n2-highmem-32; empty runs the workers '
        'as pipeline steps sized by export_cpu / export_memory. Set, each worker runs as a '
        'Vertex AI custom job on that machine with export_boot_disk_size_gb of disk.'
    ),
    'export_boot_disk_size_gb': (
        'boot disk of each export worker custom job, in GB (used with export_machine_type). '
        'A gs:// export holds ~2 output shards on disk; a .bin base, each file whole.'
    ),
    'export_service_account': (
        'service account the export worker custom jobs run as (with export_machine_type); it '
        "needs the buckets' read/write roles. Empty: the pipeline's own (tune2serve submit "
        'fills it from --service-account), else the Vertex AI Custom Code Service Agent.'
    ),
    'strict': 'treat validation warnings as errors.',
    'verify_checksums': (
        "also hash every exported file against the export's manifest during validation (reads"
        ' all the data; off by default, validate reads headers only).'
    ),
    'machine_type': (
        'serving machine type, for example g2-standard-12; empty lets Vertex AI recommend '
        'one. Machine type, accelerator type and count are set together or not at all.'
    ),
    'accelerator_type': ('accelerator type, for example NVIDIA_L4 (any case; nvidia-l4 too); empty with machine_type '
                         'empty.'),
    'accelerator_count': 'accelerators per replica; 0 with machine_type empty.',
    'min_replica_count': 'minimum number of serving replicas.',
    'max_replica_count': 'maximum number of serving replicas (autoscaling upper bound).',
    'endpoint_display_name': (
        'display name of the endpoint the deploy makes; empty for one derived from the '
        'export.'
    ),
    'model_display_name': 'display name of the registered model; empty for one derived from the export.',
    'enable_private_service_connect': (
        'deploy to a Private Service Connect endpoint (needed under VPC Service Controls) '
        'instead of a public dedicated one.'
    ),
    'psc_project_allowlist': (
        'projects allowed to connect to the PSC endpoint, a JSON list of project ids or '
        'numbers, for example ["my-project", "123456789012"]; used with '
        'enable_private_service_connect ([] for none).'
    ),
    'deploy_timeout_s': 'how long to wait for the deploy operation, in seconds, before failing the run.',
    'golden': (
        'golden prompts as JSON Lines text, one case a line, {"prompt": ...} or {"messages": '
        '[...]} with "expect" (a regular expression), for example {"prompt": "capital of '
        'France?", "expect": "(?i)paris"} on one line and {"messages": [{"role": "user", '
        '"content": "2+2?"}], "expect": "4"} on the next; empty to send the built-in sanity '
        'prompts only.'
    ),
    'production_endpoint': (
        'the serving endpoint to promote the new model onto (resource name or id) through '
        'canary steps; empty to check that the new endpoint serves 100% on healthy replicas.'
    ),
    'canary_percent': (
        'share of traffic the new model gets in its one canary step before 100%, in percent '
        '(default 10); used when steps is empty.'
    ),
    'steps': (
        'canary schedule as comma-separated percents, for example 10,50,100; empty to use '
        'canary_percent (steps, when given, replaces it).'
    ),
    'significance': (
        'false-alarm rate of the statistical test that the observed traffic shares match the '
        'configured split.'
    ),
    'keep_previous_s': (
        'seconds the previous model stays deployed at 0% traffic after a promotion, for a '
        'fast manual rollback; 0 undeploys it at once.'
    ),
    'bake_s': (
        'seconds each canary step below 100% holds its split after the probe passed, while '
        "the canary is judged by the endpoint's real traffic in Cloud Monitoring (needs "
        'roles/monitoring.viewer; points cover 60 s and arrive minutes late, so use 600 or '
        'more); 0: no bake. Too little canary traffic to judge rolls back.'
    ),
    'max_error_rate_delta': (
        "bake: roll back when the canary's error rate on real traffic exceeds the serving "
        "model's by more than this (absolute, 0.01 = one point)."
    ),
    'max_latency_ratio': (
        "bake: roll back when the canary's p95 latency on real traffic exceeds this times the "
        "serving model's."
    ),
    'min_bake_requests': (
        'bake: the fewest requests the canary must answer during the bake for a verdict; '
        'fewer is inconclusive and rolls back.'
    ),
    'force_promote': (
        "a reason to promote although the quality gate held or rejected the candidate: an "
        "audited override (the reason, the verdict overridden and the run's service account "
        "go into a log line, the endpoint's labels and the promotion record; the run's "
        "labels when submitted with it); the canary's own checks still apply. Empty: the "
        "quality gate's verdict stands."
    ),
    'eval_set': (
        'the quality gate\'s eval set, compared between smoke-test and verify-traffic: JSON Lines '
        'text, or the gs:// URI of such a file, one case a line: {"prompt": ...} or {"messages": '
        '[...]}, optional "reference", "expect" (a regular expression), "json_schema", "tags", '
        '"max_tokens", "name". Every case goes to the candidate and to the model serving on '
        'production_endpoint (the candidate alone against eval_min_pass_rate when that is '
        'empty), and verify-traffic promotes nothing unless the verdict is promote '
        '(components/quality_gate/POLICY.md). Empty: no quality gate.'
    ),
    'judge_endpoint': (
        'quality gate: a Vertex AI endpoint serving a judge model, asked which answer is better '
        'in both orders; its credentials are the pipeline\'s own. Empty: no judge (or '
        'judge_model alone).'
    ),
    'judge_model': (
        'quality gate: the judge\'s model name; without judge_endpoint, a model through Vertex '
        'AI\'s OpenAI-compatible API, for example google/gemini-2.0-flash. Empty: no judge.'
    ),
    'judge_prompt': (
        'quality gate: the judge prompt\'s text, holding {{question}}, {{answer_a}}, '
        '{{answer_b}} (and optionally {{reference}}); empty for the shipped prompt.'
    ),
    'eval_margin': (
        'quality gate: reject when the candidate fails more eval cases than the serving model '
        'by more than max(1 case, this share of the cases).'
    ),
    'eval_delta': (
        "quality gate, with a judge: promote when the judged win rate's lower 95% bound is "
        'above 0.5 minus this (non-inferiority margin).'
    ),
    'eval_min_pass_rate': (
        'quality gate without a serving model (a first promotion): the share of eval cases '
        'the candidate must pass to be promoted.'
    ),
}

# What the sub-pipelines take from the step before them.
GATE_DOCS: dict[str, str] = {
    "proceed": "discover's verdict: False ends the run as a successful no-op.",
    "reason": "discover's reason, shown by skip when there is nothing to promote.",
    "passed": "validate's verdict; False stops here and fails the run.",
    "summary": "validate's summary, the failure message when it did not pass.",
    "export_uri": "the export folder to deploy.",
}


def _with_range(name: str, doc: str) -> str:
    """The description with the parameter's documented range (components/ranges.py), the
    one a run refuses values outside of."""
    allowed = describe_parameter(name)
    return f"{doc} Range: {allowed}." if allowed else doc


def required_parameters(fn: Any) -> list[str]:
    """The parameters of ``fn`` without a default: what a run cannot start without."""
    return [n for n, p in inspect.signature(fn).parameters.items() if p.default is inspect.Parameter.empty]


def documented(summary: str, lead_with_required: bool = False, **overrides: str) -> Callable[[Any], Any]:
    """Writes a pipeline function's Google-style docstring from ``PARAMETER_DOCS``.

    KFP turns the "Args:" section into the input descriptions the Vertex AI UI shows.
    The gates are sub-pipelines that re-declare the parameters they pass on, so the
    descriptions live in one table instead of being repeated in three docstrings.
    With ``lead_with_required`` (the pipeline a person starts), the description opens with
    the required parameters and each of theirs says "Required", since the UI's form lists
    every parameter alphabetically, the few required ones among many with defaults.
    """

    def apply(fn: Any) -> Any:
        names = inspect.signature(fn).parameters
        docs = {**PARAMETER_DOCS, **GATE_DOCS, **overrides}
        required = required_parameters(fn) if lead_with_required else []
        head = [f"Required: {', '.join(required)} (every other parameter has a default). {summary}"] if required \
            else [summary]
        args = [f"    {n}: {'Required. ' if n in required else ''}{_with_range(n, docs[n])}" for n in names]
        fn.__doc__ = "\n".join([*head, "", "Args:", *args])
        return fn

    return apply
