"""The "already promoted" record: one small JSON object next to each promoted export.

After a successful promotion the pipeline writes ``<export>.promotion.json`` beside the
export folder (``gs://b/exports/run-7`` → ``gs://b/exports/run-7.promotion.json``):
{source, export, manifest_digest, endpoint, model, run_id, time, override}. ``override`` is
null, or — for a promotion forced over the quality gate's hold or reject
(``force_promote``, components/verify_traffic/override.py) — {reason,
overridden_verdict, identity, time}: the audit trail stays beside what was promoted. Beside, not inside: the
export folder's files are exactly its manifest's, and a later validate or deploy of it
must not meet a file it does not list.

A scheduled run reads the records under the exports prefix to decide whether the newest
tuning output was promoted already (``find_promotion``) and, if so, ends as a no-op.

The pipeline's ``record-promotion`` step (``record_after_verify``) writes the record once
verify-traffic said ``promoted`` or ``verified``. ``quality_gate`` holds what the quality gate
(components/quality_gate/) said before the promotion: {verdict, eval_set_sha256, judge}, or
null when no eval set was compared. Failing to write it does not fail the
run: the promotion already happened, and a failed run would make the exit handler undo
it. The cost of a missing record is one repeated promotion by the next scheduled run,
so the step says so loudly (a warning and its output) instead.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from tune2serve.components.checkpoint.storage import open_folder
from tune2serve.components.errors import PromotionError, UsageError
from tune2serve.components.logs import get_logger, log_event

RECORD_SUFFIX = ".promotion.json"
_log = get_logger("scheduling.promotion_record")

# verify-traffic outcomes after which the new model serves: the ones worth recording.
RECORDED_OUTCOMES = ("promoted", "verified")


@dataclass(frozen=True)
class PromotionRecord:
    source: str
    export: str
    manifest_digest: str | None
    endpoint: str
    model: str
    time: str
    run_id: str | None = None
    override: dict[str, str] | None = None
    quality_gate: dict[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> PromotionRecord:
        try:
            doc = json.loads(text)
            return cls(**{k: doc.get(k) for k in cls.__dataclass_fields__})
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise UsageError(f"{where}: not a promotion record ({type(e).__name__}: {e})", file=where) from e


def _normal(uri: str) -> str:
    return uri.rstrip("/")


def _sibling(export_uri: str) -> tuple[str, str]:
    """(parent folder URI, record name) for an export folder."""
    parent, _, base = _normal(export_uri).rpartition("/")
    if not base or not parent or parent in ("gs:", "gs:/"):
        raise UsageError(f"{export_uri!r}: an export must be a folder below a bucket or directory, e.g. gs://BUCKET/exports/NAME")
    return parent, base + RECORD_SUFFIX


def write_promotion_record(export_uri: str, *, endpoint: str, model: str, source: str | None = None,
                           run_id: str | None = None, now: float | None = None,
                           override: dict[str, str] | None = None,
                           quality_gate: dict[str, str] | None = None) -> PromotionRecord:
    """Writes the record after a successful promotion. ``source`` defaults to the one
    the export's manifest names; the digest is the manifest's. A folder with no manifest
    (deployed as it is: export passed it through) is its own source."""
    from tune2serve.components.checkpoint.manifest import read_manifest

    manifest = read_manifest(open_folder(export_uri))
    source = source or (manifest.source if manifest else None) or export_uri
    record = PromotionRecord(
        source=_normal(source), export=_normal(export_uri),
        manifest_digest=manifest.digest() if manifest else None, endpoint=endpoint, model=model,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now if now is not None else time.time())),
        run_id=run_id, override=override, quality_gate=quality_gate,
    )
    parent, name = _sibling(export_uri)
    open_folder(parent).write_bytes(name, record.to_json().encode())
    log_event(_log, "promotion_recorded", f"recorded promotion of {record.source}", export=record.export,
              endpoint=endpoint, model=model)
    return record


def record_uri(export_uri: str) -> str:
    """Where the record of ``export_uri`` lives: ``<export>.promotion.json`` beside it."""
    parent, name = _sibling(export_uri)
    return open_folder(parent).join(name)


def parse_override(text: str) -> dict[str, str] | None:
    """verify-traffic's ``override`` output (JSON, "" for none) as the record keeps it. A
    text that is not the object verify-traffic writes is kept whole under ``unparsed``:
    an override is never dropped from the record."""
    if not text:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        return doc
    return {"unparsed": text[:2000]}


def quality_gate_entry(verdict: str, eval_set_sha256: str, judge: str) -> dict[str, str] | None:
    """What the record keeps of the quality gate's step (its outputs): the verdict, the eval
    set's sha256 and the judge used ("" for none); None when no eval set was compared."""
    if not verdict and not eval_set_sha256:
        return None
    return {"verdict": verdict, "eval_set_sha256": eval_set_sha256, "judge": judge}


def record_after_verify(export_uri: str, *, endpoint: str, model: str, outcome: str, run_id: str = "",
                        production_endpoint: str = "", override: str = "", quality_verdict: str = "",
                        eval_set_sha256: str = "", judge: str = "") -> str:
    """Writes the record when verify-traffic's ``outcome`` means the model now serves.

    ``endpoint`` is the one deploy made; when the model was promoted onto
    ``production_endpoint`` that one is recorded instead (deploy's staging endpoint is
    deleted after a promotion). Returns what happened, for the step's output: the
    record's URI, or ``"not recorded: <why>"``; never raises for a storage error (see the
    module docstring).
    """
    if outcome not in RECORDED_OUTCOMES:
        message = f"not recorded: outcome {outcome!r} is not a promotion (expected one of {', '.join(RECORDED_OUTCOMES)})"
        log_event(_log, "promotion_not_recorded", message, logging.WARNING, export=export_uri)
        return message
    try:
        write_promotion_record(export_uri, endpoint=production_endpoint or endpoint, model=model,
                               run_id=run_id or None, override=parse_override(override),
                               quality_gate=quality_gate_entry(quality_verdict, eval_set_sha256, judge))
        return record_uri(export_uri)
    except PromotionError as e:
        message = (f"not recorded: {e}; the promotion stands, but the next scheduled run may promote "
                   f"this export again unless {export_uri}{RECORD_SUFFIX} is written")
        log_event(_log, "promotion_not_recorded", message, logging.WARNING, export=export_uri)
        return message


def read_promotion_record(export_uri: str) -> PromotionRecord | None:
    parent, name = _sibling(export_uri)
    folder = open_folder(parent)
    if not folder.has(name):
        return None
    return PromotionRecord.from_json(folder.read_bytes(name), folder.join(name))


def find_promotion(source: str, exports_prefix: str) -> PromotionRecord | None:
    """A record proving ``source`` was promoted, or None: the one beside ``source`` itself
    (a source promoted as it is, export having passed it through), else the newest under
    ``exports_prefix`` whose source is ``source``. An unreadable record is skipped with a
    warning (it cannot prove a promotion)."""
    from tune2serve.components.errors import SourceNotFoundError

    try:
        beside = read_promotion_record(source)
    except PromotionError as e:
        log_event(_log, "promotion_record_unreadable", str(e), logging.WARNING, source=source)
        beside = None
    if beside is not None and _normal(beside.source) == _normal(source):
        return beside

    folder = open_folder(exports_prefix)
    try:
        names = [o.name for o in folder.list() if o.name.endswith(RECORD_SUFFIX)]
    except SourceNotFoundError:
        return None
    found: list[PromotionRecord] = []
    for name in names:
        try:
            record = PromotionRecord.from_json(folder.read_bytes(name), folder.join(name))
        except PromotionError as e:
            log_event(_log, "promotion_record_unreadable", str(e), logging.WARNING, record=folder.join(name))
            continue
        if record.source and _normal(record.source) == _normal(source):
            found.append(record)
    return max(found, key=lambda r: r.time or "") if found else None
