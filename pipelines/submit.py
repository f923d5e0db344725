"""Submitting the compiled pipeline as a Vertex AI PipelineJob: read the template's
parameter definitions, turn ``--param``/``--params-file`` into typed values, refuse what
the pipeline does not declare or misses, then hand a ``RunSpec`` to the SDK layer.

Everything that can be wrong with the user's input is found here, before any request is
sent: a missing or malformed template or parameters file, an unknown or missing
parameter, a value of the wrong type, a pipeline root that is not ``gs://``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune2serve.components.errors import UsageError

DEFAULT_TEMPLATE = Path("compiled") / "promote_checkpoint.yaml"
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
# Filled from --project/--region when the pipeline declares them and they are not given.
def target_defaults(vertex: Any, service_account: str | None) -> dict[str, Any]:
    """Parameters that follow from where the run goes, unless given: project, region,
    and the service account of the export's custom jobs, the run's own (so that an export
    on its own machine reads and writes what the run can)."""
    defaults: dict[str, Any] = {"project": vertex.project, "region": vertex.region}
    if service_account:
        defaults["export_service_account"] = service_account
    return defaults


@dataclass(frozen=True)
class PipelineInput:
    name: str
    type: str  # STRING | NUMBER_INTEGER | NUMBER_DOUBLE | BOOLEAN | LIST | STRUCT
    required: bool
    description: str = ""


@dataclass(frozen=True)
class PipelineTemplate:
    path: str
    name: str
    inputs: dict[str, PipelineInput]


@dataclass(frozen=True)
class Submission:
    """A checked submission: where it goes and what it runs."""

    vertex: Any  # components.vertex.clients.VertexTarget
    run_spec: Any  # components.vertex.pipeline_jobs.RunSpec
    template: PipelineTemplate


def _template_text(path: str) -> str:
    """A template on local disk or at gs://BUCKET/OBJECT (the trigger reads it from GCS)."""
    if path.startswith("gs://"):
        from tune2serve.components.checkpoint.storage import open_folder
        from tune2serve.components.errors import SourceError

        parent, _, name = path.rpartition("/")
        try:
            return open_folder(parent).read_text(name)
        except SourceError as e:
            raise UsageError(f"{path}: cannot read the pipeline template: {e}", file=path) from e
    file = Path(path)
    if not file.is_file():
        hint = " (run 'tune2serve compile' first, or pass --template PATH)" if file == DEFAULT_TEMPLATE else ""
        raise UsageError(f"{file}: no such pipeline template{hint}", file=str(file))
    return file.read_text()


def load_template(path: str | Path) -> PipelineTemplate:
    """Reads a compiled pipeline (YAML or JSON; a PipelineSpec or a PipelineJob), from a
    local file or gs://."""
    import yaml

    file = str(path)
    try:
        doc = yaml.safe_load(_template_text(file))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"{file}: not a compiled pipeline (YAML does not parse: {e})", file=file) from e
    spec = doc.get("pipelineSpec", doc) if isinstance(doc, dict) else None
    if not isinstance(spec, dict) or "root" not in spec or "pipelineInfo" not in spec:
        raise UsageError(f"{file}: not a compiled KFP pipeline (no pipelineInfo/root); compile it with "
                         "'tune2serve compile'", file=file)
    inputs = {}
    for name, definition in (spec["root"].get("inputDefinitions", {}).get("parameters") or {}).items():
        required = "defaultValue" not in definition and not definition.get("isOptional", False)
        inputs[name] = PipelineInput(name, definition.get("parameterType", "STRING"), required,
                                     definition.get("description", ""))
    return PipelineTemplate(file, spec["pipelineInfo"]["name"], inputs)


def parse_assignments(items: list[str], what: str) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` → ``{"a": "1", "b": "x=y"}``; ``what`` names the flag."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {item!r}: expected NAME=VALUE")
        if key.strip() in out:
            raise UsageError(f"{what} {key.strip()!r} is given twice")
        out[key.strip()] = value
    return out


def load_params_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of parameter names to values."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{file}: no such parameters file", file=str(file))
    try:
        doc = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"{file}: parameters file does not parse as YAML or JSON: {e}", file=str(file)) from e
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise UsageError(f"{file}: a parameters file must be a mapping of parameter names to values, "
                         f"e.g. 'source: gs://bucket/run'; got {type(doc).__name__}", file=str(file))
    return doc


def _from_text(value: str, param: PipelineInput) -> Any:
    """A ``--param`` value (always text) as the type the pipeline declares."""
    try:
        if param.type == "NUMBER_INTEGER":
            return int(value)
        if param.type == "NUMBER_DOUBLE":
            return float(value)
        if param.type == "BOOLEAN":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return value.lower() in ("true", "1", "yes")
        if param.type in ("LIST", "STRUCT"):
            return json.loads(value)
    except (ValueError, json.JSONDecodeError) as e:
        raise UsageError(f"parameter {param.name}={value!r}: not a {param.type} ({e})") from e
    return value


def _check_type(value: Any, param: PipelineInput) -> Any:
    expected: dict[str, tuple[type, ...]] = {
        "STRING": (str,), "NUMBER_INTEGER": (int,), "NUMBER_DOUBLE": (int, float),
        "BOOLEAN": (bool,), "LIST": (list,), "STRUCT": (dict,),
    }
    types = expected.get(param.type, (object,))
    if isinstance(value, bool) and param.type != "BOOLEAN" or not isinstance(value, types):
        raise UsageError(f"parameter {param.name}: expected {param.type}, got {type(value).__name__} {value!r}")
    return value


def resolve_parameters(template: PipelineTemplate, from_file: dict[str, Any], from_flags: dict[str, str],
                       defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Flags override the file; ``defaults`` fill declared parameters nobody gave.
    Unknown names and missing required parameters are usage errors, all named at once."""
    given = set(from_file) | set(from_flags)
    unknown = sorted(given - set(template.inputs))
    if unknown:
        known = ", ".join(sorted(template.inputs)) or "(none)"
        raise UsageError(f"{template.path}: unknown pipeline parameter(s) {', '.join(unknown)}; "
                         f"the pipeline declares: {known}", file=template.path)
    values = {k: _check_type(v, template.inputs[k]) for k, v in from_file.items()}
    values.update({k: _from_text(v, template.inputs[k]) for k, v in from_flags.items()})
    for name, value in (defaults or {}).items():
        if name in template.inputs and name not in values:
            values[name] = value
    missing = sorted(n for n, p in template.inputs.items() if p.required and n not in values)
    if missing:
        raise UsageError(f"{template.path}: missing required pipeline parameter(s) {', '.join(missing)}; "
                         "give them with --param NAME=VALUE or --params-file", file=template.path)
    return values


def parse_labels(items: list[str]) -> dict[str, str]:
    labels = parse_assignments(items, "--label")
    for key, value in labels.items():
        if not _LABEL.match(key) or not _LABEL_VALUE.match(value):
            raise UsageError(f"--label {key}={value}: label keys are lowercase letters, digits, '_' or '-' "
                             "(starting with a letter), values the same, at most 63 characters")
    return labels


def check_pipeline_root(uri: str) -> str:
    if not uri.startswith("gs://") or len(uri) <= len("gs://"):
        raise UsageError(f"--pipeline-root {uri!r}: Vertex AI Pipelines writes its artifacts to Cloud "
                         "Storage; give gs://BUCKET/PREFIX")
    return uri.rstrip("/")


def prepare(*, project: str, region: str, template_path: str | Path, pipeline_root: str,
            params: dict[str, str] | None = None, params_file: str | Path | None = None,
            labels: dict[str, str] | None = None, display_name: str | None = None, job_id: str | None = None,
            service_account: str | None = None, network: str | None = None,
            network_attachment: str | None = None, enable_caching: bool | None = None) -> Submission:
    """Checks everything and builds the submission; sends nothing."""
    from tune2serve.components.vertex.clients import target

    vertex = target(project, region)
    root = check_pipeline_root(pipeline_root)
    template = load_template(template_path)
    from_file = load_params_file(params_file) if params_file else {}
    values = resolve_parameters(template, from_file, params or {}, defaults=target_defaults(vertex, service_account))
    return prepare_from_values(vertex=vertex, template=template, pipeline_root=root, values=values,
                               labels=labels, display_name=display_name, job_id=job_id,
                               service_account=service_account, network=network,
                               network_attachment=network_attachment, enable_caching=enable_caching)


def prepare_from_values(*, vertex: Any, template: PipelineTemplate, pipeline_root: str, values: dict[str, Any],
                        labels: dict[str, str] | None = None, display_name: str | None = None,
                        job_id: str | None = None, service_account: str | None = None,
                        network: str | None = None, network_attachment: str | None = None,
                        enable_caching: bool | None = None) -> Submission:
    """The submission for parameter values already resolved against ``template``."""
    from tune2serve.components.ranges import check_parameter_values
    from tune2serve.components.vertex.pipeline_jobs import JOB_ID_PATTERN, RunSpec

    from tune2serve.components.verify_traffic.override import run_labels

    check_parameter_values(values)  # a NaN or a 0 that means nothing fails here, not in the run
    forced = run_labels(str(values.get("force_promote") or ""), vertex)  # an override is audited in the run's labels
    if job_id is not None and not JOB_ID_PATTERN.match(job_id):
        raise UsageError(f"--job-id {job_id!r}: use lowercase letters, digits and '-', starting with a letter (≤ 128)")
    spec = RunSpec(
        template_path=template.path, pipeline_root=check_pipeline_root(pipeline_root), parameter_values=values,
        display_name=display_name or template.name, job_id=job_id,
        labels={"managed-by": "tune2serve", **(labels or {}), **forced}, service_account=service_account,
        network=network, network_attachment=network_attachment, enable_caching=enable_caching,
    )
    return Submission(vertex, spec, template)


def submit(submission: Submission) -> Any:
    """Sends the submission; returns the run's ``RunStatus``."""
    from tune2serve.components.vertex.pipeline_jobs import submit_run

    return submit_run(submission.vertex, submission.run_spec)
