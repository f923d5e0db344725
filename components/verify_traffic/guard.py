"""Noticing a change made by someone else during a promotion.

The endpoint's lease keeps a second tune2serve run out, but not a person at the console
or a ``gcloud ai endpoints update --traffic-split`` — and a canary that goes on as if
nothing happened would overwrite their split at its next step, or "roll back" a change
they made on purpose. Their change is authoritative: the promotion stops (outcome
``failed``), says what it expected and what it found, and leaves the endpoint as they
set it — no step, no rollback, no undeploy.

How: the promotion knows the exact split it last set. It reads the endpoint again
before each change of its own and after each wait, probe and bake, and compares
(``check_split``). Its own split changes are compare-and-swaps on the endpoint's etag
(``move_split``), so a change that lands between that read and the write is refused by
Vertex instead of overwritten; the deployModel that adds the canary carries no split
(the new model gets 0 %, nothing else moves), and undeploys carry none either (Vertex
then refuses to undeploy a model someone gave traffic to).

For whoever rolls back without having watched the promotion (the pipeline's exit
handler, an operator's ``--rollback``), ``outside_change`` tells from the record alone
whether the endpoint's split is one this promotion could have set — from the recorded
previous split, the canary at some share, the rest in proportion — or someone else's.
"""

from __future__ import annotations

from collections.abc import Mapping

from tune2serve.components.errors import OutsideChangeError, PromotionError, VertexError
from tune2serve.components.verify_traffic.endpoint_api import EndpointApi, is_etag_conflict
from tune2serve.components.verify_traffic.traffic import NEW_MODEL_KEY, canary_split, normalize
from tune2serve.components.vertex.endpoints import EndpointState

MAX_CAS_ATTEMPTS = 8


def check_split(api: EndpointApi, endpoint: str, expected: Mapping[str, int], when: str) -> EndpointState:
    """The endpoint as it is now, or ``OutsideChangeError`` when its split is not ``expected``."""
    state = api.get_endpoint(endpoint)
    if normalize(state.traffic_split) != normalize(expected):
        raise OutsideChangeError(endpoint, expected, state.traffic_split, when)
    return state


def move_split(api: EndpointApi, endpoint: str, expected: Mapping[str, int], new: Mapping[str, int],
               when: str) -> EndpointState:
    """Sets ``new`` only while the split still is ``expected`` (compare-and-swap on the
    etag read with it); ``OutsideChangeError`` when someone else changed it first."""
    for _ in range(MAX_CAS_ATTEMPTS):
        state = api.get_endpoint(endpoint)
        found = normalize(state.traffic_split)
        if found == normalize(new):
            return state  # an earlier attempt of ours landed (its answer was lost and retried)
        if found != normalize(expected):
            raise OutsideChangeError(endpoint, expected, found, when)
        try:
            return api.set_traffic_split(endpoint, new, etag=state.etag)
        except VertexError as e:
            if not is_etag_conflict(e):
                raise
            # the endpoint changed since the read (labels, or the split): read and decide again
    raise PromotionError(f"{endpoint}: the endpoint kept changing while tune2serve tried to set its traffic split "
                         f"to {normalize(new)}; stopped")


def outside_change(state: EndpointState, previous: Mapping[str, int], new_ids: list[str],
                   recorded_shares: tuple[int, ...] = ()) -> str:
    """Why ``state``'s split cannot be one a promotion from ``previous`` set, giving one of
    ``new_ids`` (the canary's deployed ids found) one of ``recorded_shares`` (any share
    when none is recorded) and the rest in proportion ("" when it can be)."""
    found = normalize(state.traffic_split)
    previous = normalize(previous)
    shares = {i: found.get(i, 0) for i in new_ids}
    canary = next((i for i, v in shares.items() if v), new_ids[0] if new_ids else NEW_MODEL_KEY)
    if sum(1 for v in shares.values() if v) > 1:
        return f"the endpoint's traffic split {found} gives traffic to {len(shares)} deployments of the model"
    if recorded_shares and found.get(canary, 0) not in recorded_shares:
        return (f"the endpoint's traffic split {found} gives the canary {canary} {found.get(canary, 0)}%, where this "
                f"promotion last set {' or '.join(f'{s}%' for s in recorded_shares)}")
    ours = canary_split(previous, canary, found.get(canary, 0)) if previous or found else {}
    if found == normalize(ours) or (not previous and not found):
        return ""
    return (f"the endpoint's traffic split {found} is not one this promotion sets (from {previous}, the canary "
            f"{canary} at {found.get(canary, 0)}% would be {normalize(ours)})")


__all__ = ["OutsideChangeError", "check_split", "move_split", "outside_change"]
