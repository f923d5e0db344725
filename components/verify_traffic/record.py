"""The pre-promotion record, kept in the production endpoint's own labels.

Why labels (not a JSON file in GCS): the record must be found by whoever rolls back —
the step itself, the pipeline's exit handler, an operator with only the endpoint's
name — with no bucket to agree on, and it must change atomically with the lease (one
compare-and-swap on the endpoint's etag writes both). Labels fit: a promotion records
at most a handful of values (Vertex allows 64 labels per resource, keys and values of
at most 63 characters of ``[a-z0-9_-]``).

    tune2serve-promo-state   canary | promoted | rolled_back | stopped
    tune2serve-promo-run     the pipeline run id (sanitized) or "cli"
    tune2serve-promo-model   the id of the Model being promoted
    tune2serve-promo-new     its deployed-model id on this endpoint, once known
    tune2serve-promo-share   the share(s) the promotion last gave it: "50", or "10-50" while
                             it moves the split from one to the other (so a rollback that
                             did not watch the promotion can tell its split from someone
                             else's)
    tune2serve-prev-<ID>     the share deployed model <ID> had before the promotion
    tune2serve-promo-forced  with force_promote: the quality-gate verdict it overrode
                             (hold, reject; "none" when none was given) — override.py
    tune2serve-promo-forced-by  who ran the override (sanitized account name)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from tune2serve.components.errors import UsageError
from tune2serve.components.vertex.resources import MAX_LABEL_LENGTH, sanitize_label_value

PROMO_PREFIX = "tune2serve-promo-"
STATE = "tune2serve-promo-state"
RUN = "tune2serve-promo-run"
MODEL = "tune2serve-promo-model"
NEW = "tune2serve-promo-new"
SHARE = "tune2serve-promo-share"
FORCED = "tune2serve-promo-forced"
FORCED_BY = "tune2serve-promo-forced-by"
PREV_PREFIX = "tune2serve-prev-"
MAX_LABELS = 64

CANARY, PROMOTED, ROLLED_BACK = "canary", "promoted", "rolled_back"
# The promotion stopped because someone else changed the endpoint mid-canary: their split
# stands, so nothing (the step, the exit handler, --rollback) acts on this record again.
STOPPED = "stopped"


@dataclass(frozen=True)
class PromotionRecord:
    state: str
    run: str
    model_id: str
    new_deployed_id: str = ""
    previous_split: dict[str, int] = field(default_factory=dict)
    shares: tuple[int, ...] = ()  # the canary's share(s) as last set; () when not recorded
    forced: str = ""  # force_promote: the verdict overridden ("" when the promotion was not forced)
    forced_by: str = ""  # and who forced it

    def with_state(self, state: str) -> PromotionRecord:
        return replace(self, state=state)

    def with_new(self, deployed_id: str) -> PromotionRecord:
        return replace(self, new_deployed_id=deployed_id)

    def with_shares(self, *shares: int) -> PromotionRecord:
        return replace(self, shares=tuple(dict.fromkeys(int(s) for s in shares)))


def record_labels(record: PromotionRecord) -> dict[str, str]:
    labels = {STATE: record.state, RUN: sanitize_label_value(record.run), MODEL: sanitize_label_value(record.model_id)}
    if record.new_deployed_id:
        labels[NEW] = sanitize_label_value(record.new_deployed_id)
    if record.shares:
        labels[SHARE] = "-".join(str(int(s)) for s in record.shares)
    if record.forced:
        labels[FORCED] = sanitize_label_value(record.forced)
        labels[FORCED_BY] = sanitize_label_value(record.forced_by) or "unknown"
    for deployed_id, share in sorted(record.previous_split.items()):
        key = PREV_PREFIX + sanitize_label_value(deployed_id)
        if len(key) > MAX_LABEL_LENGTH:
            raise UsageError(f"deployed model id {deployed_id!r} is too long to record in a label")
        labels[key] = str(int(share))
    return labels


def read_record(labels: Mapping[str, str]) -> PromotionRecord | None:
    """The record in ``labels``, or None when no promotion ever wrote one."""
    if STATE not in labels:
        return None
    previous = {k[len(PREV_PREFIX):]: int(v) for k, v in labels.items() if k.startswith(PREV_PREFIX) and v.isdigit()}
    shares = tuple(int(s) for s in labels.get(SHARE, "").split("-") if s.isdigit() and len(s) <= 3)
    return PromotionRecord(labels[STATE], labels.get(RUN, ""), labels.get(MODEL, ""), labels.get(NEW, ""), previous,
                           shares, labels.get(FORCED, ""), labels.get(FORCED_BY, ""))


def with_record(labels: Mapping[str, str], record: PromotionRecord | None) -> dict[str, str]:
    """``labels`` with the promotion record replaced by ``record`` (removed when None);
    labels that are not ours are kept as they are."""
    kept = {k: v for k, v in labels.items() if not (k.startswith(PROMO_PREFIX) or k.startswith(PREV_PREFIX))}
    out = {**kept, **(record_labels(record) if record else {})}
    if len(out) > MAX_LABELS:
        raise UsageError(f"the endpoint would carry {len(out)} labels; Vertex allows {MAX_LABELS}. "
                         "Remove some of its labels and run again.")
    return out
