"""Checks an export before anything is deployed: it exists, it is complete (export
writes ``manifest.json`` last, so no manifest means a half-written or foreign folder),
and it passes validation. A deploy that would fail after GPUs are provisioned costs
machine-hours and an hour of waiting; these checks cost a few ranged reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tune2serve.components.checkpoint.manifest import MANIFEST_NAME, Manifest, read_manifest
from tune2serve.components.checkpoint.storage import GCS_SCHEME, open_folder
from tune2serve.components.deploy.request import MachineSpec
from tune2serve.components.errors import (
    CheckpointError,
    SourceNotFoundError,
    UsageError,
    ValidationFailedError,
)
from tune2serve.components.logs import get_logger, log_event

_log = get_logger("deploy.preflight")


@dataclass(frozen=True)
class Preflight:
    manifest: Manifest
    serving_bytes: int | None  # validate's estimate (weights + KV cache), for the machine check


def check_export(export_uri: str, machine: MachineSpec | None = None) -> Preflight:
    """The export's manifest and memory estimate, or raises before any Vertex call.

    Raises:
        UsageError: the URI is not ``gs://`` (Vertex reads custom weights from GCS only),
            or the machine spec names no machine Vertex AI offers.
        SourceNotFoundError: nothing at the URI.
        CheckpointError: no manifest.json (incomplete export).
        ValidationFailedError: validation found errors (the report is attached), the
            machine spec's GPU memory included.
    """
    if not export_uri.startswith(GCS_SCHEME):
        raise UsageError(f"{export_uri}: deploy reads custom weights from Cloud Storage only; "
                         "give the gs://BUCKET/PREFIX that 'tune2serve export' wrote")
    folder = open_folder(export_uri)
    if not folder.exists():
        raise SourceNotFoundError(f"{export_uri}: no such export (nothing under this prefix); "
                                  "check the URI or run 'tune2serve export' first", file=export_uri)
    manifest = read_manifest(folder)
    if manifest is None:
        raise CheckpointError(f"{export_uri}: no {MANIFEST_NAME}, so this is not a complete export "
                              "(export writes it last); rerun 'tune2serve export' to this destination",
                              file=MANIFEST_NAME)
    report = _validate(export_uri, machine)
    serving = _serving_bytes(folder, report)
    log_event(_log, "deploy.preflight_ok", f"{export_uri}: complete export, validation passed",
              export=export_uri, files=len(manifest.files), serving_bytes=serving)
    return Preflight(manifest, serving)


def _validate(export_uri: str, machine: MachineSpec | None) -> Any:
    from tune2serve.components.validate.context import ValidateOptions
    from tune2serve.components.validate.memory import parse_machine_spec
    from tune2serve.components.validate.validator import validate_checkpoint

    spec = parse_machine_spec(machine.machine_type, machine.accelerator_type, machine.accelerator_count) if machine else None
    report = validate_checkpoint(export_uri, ValidateOptions(machine_spec=spec))
    if not report.ok:
        errors = [f for f in report.findings if f.severity == "error"]
        listed = "; ".join(f"[{f.code}] {f.message}" for f in errors[:5])
        raise ValidationFailedError(
            f"{export_uri}: validation failed with {len(errors)} error(s), nothing was deployed: {listed} "
            f"(run 'tune2serve validate {export_uri}' for the full report)",
            report=report, file=export_uri,
        )
    return report


def _serving_bytes(folder: Any, report: Any) -> int | None:
    import json

    from tune2serve.components.validate.memory import estimate_serving_memory

    weight_bytes = report.summary.get("weight_bytes")
    try:
        config = json.loads(folder.read_text("config.json"))
    except (ValueError, OSError):
        return None
    text_config = config.get("text_config") or config
    return estimate_serving_memory(int(weight_bytes), text_config).total_bytes if weight_bytes else None


def fits(serving_bytes: int | None, machine: MachineSpec) -> bool:
    """validate's memory check for a recommended spec; unknown specs are not second-guessed."""
    from tune2serve.components.validate import memory

    if serving_bytes is None or machine.accelerator_type not in memory.ACCELERATORS:
        return True
    spec = memory.MachineSpec(machine.machine_type, machine.accelerator_type, machine.accelerator_count)
    return memory.fits(spec, serving_bytes)


def pick_recommended(specs: list[MachineSpec], serving_bytes: int | None, export_uri: str) -> MachineSpec:
    """The first of Vertex AI's recommended specs (in its order) that holds validate's
    serving-memory estimate. When none does, refuses (a deploy on too small a machine
    fails after the GPUs are provisioned) and names the smallest spec that fits.

    Raises:
        UsageError: no recommended spec holds the estimate (or there was none).
    """
    from tune2serve.components.validate import memory

    for spec in specs:
        if fits(serving_bytes, spec):
            return spec
    offered = ", ".join(f"{s.machine_type} with {s.accelerator_count} x {s.accelerator_type}" for s in specs) or "none"
    need = f"validate estimates {memory.human_bytes(serving_bytes)} of GPU memory" if serving_bytes else "the model"
    smallest = memory.recommend_machine_spec(serving_bytes) if serving_bytes else None
    if smallest is None:
        advice = ("no single-host machine spec holds it; deploy a smaller model" if serving_bytes else
                  "give --machine-type, --accelerator-type and --accelerator-count")
    else:
        advice = (f"the smallest spec that fits is {smallest.machine_type} with {smallest.accelerator_count} x "
                  f"{smallest.accelerator_type}: give --machine-type {smallest.machine_type} --accelerator-type "
                  f"{smallest.accelerator_type} --accelerator-count {smallest.accelerator_count}")
    raise UsageError(f"{export_uri}: Vertex AI recommended no machine spec that holds this model ({need}; "
                     f"recommended: {offered}); {advice}")
