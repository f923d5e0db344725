"""Checks a folder before anything is deployed: it exists, it is what it claims to be,
and it passes validation. A deploy that would fail after GPUs are provisioned costs
machine-hours and an hour of waiting; these checks cost one listing and a few ranged
reads.

Any Hugging Face folder on GCS that validates is deployable, not only our exports (the
custom-weights path the Vertex AI documents describe is "upload a folder, deploy it").
A tune2serve export is recognised by its ``manifest.json`` (written last, so present
means complete) and must still match it; another folder is said to be one, in one
warning line, and identified by its object listing (``checkpoint/identity.py``). A
half-uploaded folder (a shard missing or truncated, an index naming absent shards) is
refused by validate's findings, which name the file. A folder holding training state or
a pickle beside the weights is refused first, from its listing, and so is one whose
settings JSON carries a credential (Vertex copies the folder to every replica; export
makes it clean, dropping them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tune2serve.components.checkpoint.identity import LISTING, FolderIdentity, folder_identity
from tune2serve.components.checkpoint.index import find_weight_files
from tune2serve.components.checkpoint.manifest import MANIFEST_NAME
from tune2serve.components.checkpoint.storage import GCS_SCHEME, Folder, open_folder
from tune2serve.components.checkpoint.training_state import PICKLE_OUTSIDE_WEIGHTS, TRAINING_STATE, WHY, stray_files
from tune2serve.components.deploy.request import Validated
from tune2serve.components.errors import (
    CheckpointError,
    SourceNotFoundError,
    UsageError,
    ValidationFailedError,
)
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.vertex.machine_spec import MachineSpec

_log = get_logger("deploy.preflight")


@dataclass(frozen=True)
class Preflight:
    identity: FolderIdentity  # deploy's idempotence key: the manifest's digest, or the listing's
    serving_bytes: int | None  # validate's estimate (weights + KV cache), for the machine check


def check_export(export_uri: str, machine: MachineSpec | None = None, validated: Validated | None = None) -> Preflight:
    """The folder's identity and memory estimate, or raises before any Vertex call.

    ``validated`` (in the pipeline: validate's result for this export) is reused instead
    of validating a second time when it covers exactly what is deployed: the same files
    (``reuses``); otherwise, and always outside the pipeline, the folder is validated here.

    Raises:
        UsageError: the URI is not ``gs://`` (Vertex reads custom weights from GCS only),
            or the machine spec names no machine Vertex AI offers.
        SourceNotFoundError: nothing at the URI.
        CheckpointError: the folder holds training state or a pickle that is not the
            model's weights (``refuse_stray_files``); or the folder's manifest.json does not parse or no longer matches
            the files (an export damaged after it was written).
        ValidationFailedError: validation found errors (the report is attached), the
            machine spec's GPU memory included.
    """
    if not export_uri.startswith(GCS_SCHEME):
        raise UsageError(f"{export_uri}: deploy reads custom weights from Cloud Storage only; "
                         "upload the folder (gcloud storage cp -r) and give its gs://BUCKET/PREFIX")
    folder = open_folder(export_uri)
    if not folder.exists():
        raise SourceNotFoundError(f"{export_uri}: no such export (nothing under this prefix); "
                                  "check the URI or run 'tune2serve export' first", file=export_uri)
    refuse_stray_files(folder, export_uri)
    refuse_secrets(folder, export_uri)
    identity = folder_identity(folder)
    if identity.basis == LISTING:
        log_event(_log, "deploy.no_manifest", f"{export_uri}: no {MANIFEST_NAME} (not a tune2serve export); "
                  f"deploying it as it is if it validates, identified by its object listing "
                  f"({identity.files} objects, digest {identity.digest[:16]})", logging.WARNING,
                  export=export_uri, identity=identity.digest)
    why_not = reuses(validated, identity, machine)
    if validated is not None and why_not is None:
        serving = validated.serving_bytes
        log_event(_log, "deploy.validation_reused", f"{export_uri}: validate passed on exactly these files "
                  f"({identity.basis} digest {identity.digest[:16]}); not validating them again",
                  export=export_uri, identity=identity.digest, serving_bytes=serving)
    else:
        if validated is not None:
            log_event(_log, "deploy.revalidating", f"{export_uri}: validating again: {why_not}", logging.WARNING,
                      export=export_uri, identity=identity.digest)
        serving = _serving_bytes(_validate(export_uri, machine))
    log_event(_log, "deploy.preflight_ok", f"{export_uri}: validation passed ({identity.basis} identity)",
              export=export_uri, files=identity.files, identity_basis=identity.basis, serving_bytes=serving)
    return Preflight(identity, serving)


def reuses(validated: Validated | None, identity: FolderIdentity, machine: MachineSpec | None) -> str | None:
    """None when ``validated`` covers this deploy: it identifies the very files about to
    be deployed (same basis and digest, so not a folder rewritten since) and it checked
    memory against the same machine spec (or, like deploy, against none). Else why not."""
    if validated is None:
        return "no validation result was handed over"
    if validated.identity != {"basis": identity.basis, "digest": identity.digest}:
        return (f"the files differ from those validated (validated {validated.identity or 'without an identity'}, "
                f"deploying {identity.basis} digest {identity.digest})")
    if validated.machine_spec != (machine.to_dict() if machine else None):
        return f"validate checked memory against {validated.machine_spec}, deploy asks for {machine}"
    return None


def refuse_stray_files(folder: Folder, export_uri: str) -> None:
    """Refuses a folder holding training state or a pickle that is not the model's
    weights (``checkpoint/training_state.py``, the rule export and validate follow):
    Vertex AI would copy it to every replica, and a pickle is code. Decided from the
    listing and a few bytes of files whose name says nothing; nothing is unpickled.

    Raises:
        CheckpointError: naming every such file, and that ``tune2serve export`` makes a
            clean folder.
    """
    listing = [o for o in folder.list() if not o.is_symlink_outside and not o.not_regular]
    weights = find_weight_files(listing)
    stray = stray_files(folder, {o.name: o.size for o in listing}, set(weights.bins) | set(weights.safetensors))
    if not stray:
        return
    groups = []
    for code, label in ((TRAINING_STATE, "training state"), (PICKLE_OUTSIDE_WEIGHTS, "pickles beside the weights")):
        names = [s.name for s in stray if s.code == code]
        if names:
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            groups.append(f"{label} {', '.join(names[:10])}{more} ({WHY[code]})")
    raise CheckpointError(
        f"{export_uri}: refusing to deploy a folder holding files that are not part of a served model: "
        f"{'; '.join(groups)}. "
        f"Nothing was deployed. 'tune2serve export {export_uri} DEST' makes a clean folder (safetensors weights, "
        "config, tokenizer; no training state, no pickles) at DEST: deploy that",
        file=stray[0].name)


def refuse_secrets(folder: Folder, export_uri: str) -> None:
    """Refuses a folder whose settings JSON files (``config.json``, ``generation_config.json``,
    ``tokenizer_config.json``, ... at any depth of each) carry a credential, found by key or
    by value (``checkpoint/secrets.py``, the rule export scrubs by): deployed as it is, the
    token would reach every replica and anyone who can read the Model's files. Messages
    name the file and the JSON path, never the value.

    Raises:
        CheckpointError: naming each file and path, and that ``tune2serve export`` drops them.
    """
    from tune2serve.components.checkpoint import bounded_json, secrets

    names = sorted(o.name for o in folder.list()
                   if "/" not in o.name and secrets.is_scanned(o.name) and not o.not_regular)
    found: list[str] = []
    for name in names:
        try:
            doc = bounded_json.read_json(folder, name)
        except bounded_json.JsonLimitError:
            continue  # not JSON: validate names it
        found += [f"{name}: {hit.path} ({hit.what})" for hit in secrets.find_secrets(doc, name)]
    if found:
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        raise CheckpointError(
            f"{export_uri}: refusing to deploy a folder whose settings carry credentials: {'; '.join(found[:10])}{more}. "
            f"Nothing was deployed. 'tune2serve export {export_uri} DEST' makes a clean folder without them at DEST: "
            "deploy that (and revoke the credentials: they have been stored in the bucket)",
            file=found[0].split(":", 1)[0])


def _validate(export_uri: str, machine: MachineSpec | None) -> Any:
    from tune2serve.components.validate.context import ValidateOptions
    from tune2serve.components.validate.validator import validate_checkpoint

    report = validate_checkpoint(export_uri, ValidateOptions(machine_spec=machine))
    if not report.ok:
        errors = [f for f in report.findings if f.severity == "error"]
        listed = "; ".join(f"[{f.code}] {f.message}" + (f" ({f.file})" if f.file and f.file not in f.message else "")
                           for f in errors[:5])
        raise ValidationFailedError(
            f"{export_uri}: validation failed with {len(errors)} error(s), nothing was deployed: {listed} "
            f"(run 'tune2serve validate {export_uri}' for the full report)",
            report=report, file=export_uri,
        )
    return report


def _serving_bytes(report: Any) -> int | None:
    """validate's serving-memory estimate (weights as vLLM holds them + KV cache), the one
    its memory finding judges; None when it could not make one."""
    found = report.summary.get("serving_memory_bytes")
    return int(found) if isinstance(found, int) and found > 0 else None


def fits(serving_bytes: int | None, machine: MachineSpec) -> bool:
    """validate's memory check for a recommended spec; unknown specs are not second-guessed."""
    from tune2serve.components.vertex import machine_spec

    if serving_bytes is None or not machine.known:
        return True
    return machine_spec.fits(machine, serving_bytes)


def pick_recommended(specs: list[MachineSpec], serving_bytes: int | None, export_uri: str) -> MachineSpec:
    """The first of Vertex AI's recommended specs (in its order) that holds validate's
    serving-memory estimate. When none does, refuses (a deploy on too small a machine
    fails after the GPUs are provisioned) and names the smallest spec that fits.

    Raises:
        UsageError: no recommended spec holds the estimate (or there was none).
    """
    from tune2serve.components.validate.memory import human_bytes
    from tune2serve.components.vertex.machine_spec import recommend_machine_spec

    for spec in specs:
        if fits(serving_bytes, spec):
            return spec
    offered = ", ".join(f"{s.machine_type} with {s.accelerator_count} x {s.accelerator_type}" for s in specs) or "none"
    need = f"validate estimates {human_bytes(serving_bytes)} of GPU memory" if serving_bytes else "the model"
    smallest = recommend_machine_spec(serving_bytes) if serving_bytes else None
    if smallest is None:
        advice = ("no single-host machine spec holds it; deploy a smaller model" if serving_bytes else
                  "give --machine-type, --accelerator-type and --accelerator-count")
    else:
        advice = (f"the smallest spec that fits is {smallest.machine_type} with {smallest.accelerator_count} x "
                  f"{smallest.accelerator_type}: give --machine-type {smallest.machine_type} --accelerator-type "
                  f"{smallest.accelerator_type} --accelerator-count {smallest.accelerator_count}")
    raise UsageError(f"{export_uri}: Vertex AI recommended no machine spec that holds this model ({need}; "
                     f"recommended: {offered}); {advice}")
