"""``force_promote``: promoting a candidate the quality gate held or rejected — an audited
override, never a silent one.

The quality gate (``tune2serve eval``, the pipeline's quality-gate step) decides
promote / hold / reject; verify-traffic takes that verdict as a plain input
(``quality_verdict``) and promotes nothing after a hold or a reject. An operator who
knows better (the eval set is stale, the judge is wrong, the regression is accepted)
gives ``force_promote`` with a reason; then verify-traffic promotes through the canary
as usual — the canary's own checks still roll a failing model back: the override
overrules the quality judgment, not the safety of the serving traffic — and records:

* the reason, the verdict it overrode and who ran it (``caller_identity``: the
  credentials the step runs with — the pipeline job's service account in a pipeline, the
  caller's Application Default Credentials from a shell; on the local stack there are
  none, and it says so);
* in one structured log line (event ``promotion.forced``, WARNING), in verify-traffic's
  evidence (``--json``, the reports), in the endpoint's promotion-record labels
  (``record.py``: ``tune2serve-promo-forced``, ``tune2serve-promo-forced-by``), in the
  promotion record beside the export (``promotion_record.py``), and, when the run was
  submitted with it, in the pipeline job's labels (``pipelines/submit.py``).
"""

from __future__ import annotations

import logging
import time
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from tune2serve.components.errors import UsageError
from tune2serve.components.logs import get_logger, log_event, redact
from tune2serve.components.vertex.resources import sanitize_label_value

_log = get_logger("verify_traffic.override")

VERDICTS = ("promote", "hold", "reject")
BLOCKING = ("hold", "reject")
MAX_REASON_CHARS = 500
LOCAL_IDENTITY = "anonymous (local stack: no credentials)"
NOT_EVALUATED = "none"  # what an override overrode when no quality verdict was given


@dataclass(frozen=True)
class Override:
    """One audited override."""

    reason: str
    overridden_verdict: str  # "hold" | "reject" | "promote" | "none"
    identity: str
    time: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def labels(self) -> dict[str, str]:
        """The override as label values (lowercase ``[a-z0-9_-]``, 63 characters)."""
        return {"verdict": sanitize_label_value(self.overridden_verdict) or NOT_EVALUATED,
                "by": sanitize_label_value(self.identity) or "unknown",
                "reason": sanitize_label_value(self.reason) or "-"}


def check_verdict(verdict: str, name: str = "--quality-verdict") -> str:
    """The quality gate's verdict, lowercased ("" when none was given)."""
    value = (verdict or "").strip().lower()
    if value and value not in VERDICTS:
        raise UsageError(f"{name}: {verdict[:40]!r} is not a quality-gate verdict; expected one of "
                         f"{', '.join(VERDICTS)} (what `tune2serve eval` decided), or nothing")
    return value


def check_reason(reason: str, name: str = "--force-promote") -> str:
    """The override's reason: words a later reader understands, one line, bounded."""
    text = (reason or "").strip()
    if not text:
        raise UsageError(f"{name}: give the reason for overriding the quality gate (it is recorded), e.g. "
                         f"{name} 'eval set predates the new product names'")
    if len(text) > MAX_REASON_CHARS:
        raise UsageError(f"{name}: the reason is {len(text)} characters; at most {MAX_REASON_CHARS}")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise UsageError(f"{name}: the reason must be one line of printable text (no control characters)")
    return str(redact(text))


def caller_identity(vertex: Any) -> str:
    """Who runs this: the service account or account of the credentials in use (the
    pipeline job's service account inside a pipeline step; the caller's Application
    Default Credentials from a shell). A compute-engine credential names its account
    only once refreshed. Never a token."""
    if vertex.is_local:
        return LOCAL_IDENTITY
    from tune2serve.components.vertex.clients import credentials

    creds = credentials(vertex)
    name = _account(creds)
    if name in ("", "default") and hasattr(creds, "refresh"):
        try:
            import google.auth.transport.requests

            creds.refresh(google.auth.transport.requests.Request())
            name = _account(creds)
        except Exception as e:  # noqa: BLE001 — who ran it is recorded as unknown, not a failed promotion
            return f"unknown ({type(creds).__name__}: could not be refreshed: {type(e).__name__})"
    return name if name not in ("", "default") else f"unknown ({type(creds).__name__} names no account)"


def _account(creds: Any) -> str:
    for attribute in ("service_account_email", "signer_email", "account"):
        value = getattr(creds, attribute, None)
        if isinstance(value, str) and value:
            return value
    return ""


def decide(quality_verdict: str, force_promote: str, vertex: Any, *, endpoint: str, model: str | None,
           run_id: str) -> tuple[Override | None, str]:
    """(the override, if one was asked for; why not to promote, "" to go on). An override
    is logged here, once, as one structured WARNING line."""
    verdict = check_verdict(quality_verdict)
    if not force_promote:
        if verdict in BLOCKING:
            return None, (f"the quality gate's verdict is {verdict}: not promoted, nothing was changed "
                          "(force_promote REASON overrides it, audited)")
        return None, ""
    override = Override(check_reason(force_promote), verdict or NOT_EVALUATED, caller_identity(vertex),
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    log_event(_log, "promotion.forced", f"force_promote: promoting {model or endpoint} over the quality gate's "
              f"verdict {override.overridden_verdict!r}, by {override.identity}: {override.reason}",
              logging.WARNING, endpoint=endpoint, model=model, run_id=run_id, reason=override.reason,
              overridden_verdict=override.overridden_verdict, identity=override.identity)
    return override, ""


RUN_REASON_LABEL = "tune2serve-force-promote"
RUN_BY_LABEL = "tune2serve-forced-by"


def run_labels(force_promote: str, vertex: Any) -> dict[str, str]:
    """A pipeline job's labels for a run submitted with ``force_promote``: the reason and
    who submitted it (sanitized to label rules; {} without an override). The verdict is
    the run's to find: it is in the endpoint's labels and the promotion record."""
    if not force_promote:
        return {}
    reason = check_reason(force_promote, "parameter force_promote")
    return {RUN_REASON_LABEL: sanitize_label_value(reason) or "-",
            RUN_BY_LABEL: sanitize_label_value(caller_identity(vertex)) or "unknown"}


__all__ = ["BLOCKING", "LOCAL_IDENTITY", "NOT_EVALUATED", "Override", "RUN_BY_LABEL", "RUN_REASON_LABEL", "VERDICTS",
           "caller_identity", "check_reason", "check_verdict", "decide", "run_labels"]
