"""The pure half of noticing someone else's change (``guard.outside_change``): every split
a promotion sets is recognised as its own, with or without the recorded share; a split
it never sets — another share for the canary than recorded, the others out of
proportion, a model added — is named as someone else's. Generated (hypothesis)."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tune2serve.components.verify_traffic.guard import OutsideChangeError, outside_change
from tune2serve.components.verify_traffic.record import PromotionRecord, read_record, record_labels
from tune2serve.components.verify_traffic.traffic import canary_split, normalize
from tune2serve.components.vertex.endpoints import EndpointState

NEW = "999"
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)


@st.composite
def previous_splits(draw: st.DrawFn) -> dict[str, int]:
    """What served before: one to four deployed models whose shares sum to 100."""
    n = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1)))
    shares = [b - a for a, b in zip([0, *cuts], [*cuts, 100])]
    return normalize({str(100 + i): s for i, s in enumerate(shares)}) or {"100": 100}


def state(split: dict[str, int]) -> EndpointState:
    return EndpointState(name="projects/p/locations/l/endpoints/1", traffic_split=dict(split))


@SETTINGS
@given(previous=previous_splits(), percent=st.integers(0, 100), recorded=st.booleans())
def test_every_split_a_promotion_sets_is_its_own(previous: dict[str, int], percent: int, recorded: bool) -> None:
    ours = canary_split(previous, NEW, percent)
    assert outside_change(state(ours), previous, [NEW], (percent,) if recorded else ()) == ""
    assert outside_change(state(ours), previous, [NEW], (3, percent) if recorded else ()) == ""  # mid-move


@SETTINGS
@given(previous=previous_splits(), percent=st.integers(0, 100), other=st.integers(0, 100))
def test_another_share_than_the_recorded_one_is_someone_elses(previous: dict[str, int], percent: int,
                                                                other: int) -> None:
    assume(other != percent)
    theirs = canary_split(previous, NEW, other)  # even in proportion: the recorded share tells
    why = outside_change(state(theirs), previous, [NEW], (percent,))
    assert why.startswith(f"the endpoint's traffic split {normalize(theirs)} gives the canary {NEW} {other}%")


@SETTINGS
@given(previous=previous_splits(), percent=st.integers(1, 99), data=st.data())
def test_a_split_out_of_proportion_is_someone_elses(previous: dict[str, int], percent: int,
                                                     data: st.DataObject) -> None:
    assume(len(previous) >= 2)
    ours = canary_split(previous, NEW, percent)
    movable = [k for k, v in ours.items() if k != NEW and v > 0]
    assume(movable)
    a = data.draw(st.sampled_from(movable))
    b = data.draw(st.sampled_from([k for k in previous if k != a]))
    theirs = dict(ours)
    theirs[a] -= 1
    theirs[b] = theirs.get(b, 0) + 1  # one point moved between two serving models: not ours
    assert outside_change(state(theirs), previous, [NEW]).startswith(
        f"the endpoint's traffic split {normalize(theirs)} is not one this promotion sets")


def test_a_model_added_by_someone_else_is_noticed() -> None:
    theirs = {"100": 40, NEW: 10, "555": 50}
    assert "is not one this promotion sets" in outside_change(state(theirs), {"100": 100}, [NEW])
    assert "2 deployments of the model" in outside_change(state({"100": 80, NEW: 10, "998": 10}), {"100": 100},
                                                           [NEW, "998"])


def test_the_record_keeps_the_shares_and_the_error_says_what_changed() -> None:
    record = PromotionRecord("canary", "run", "7", NEW, {"100": 100}).with_shares(10, 50)
    assert record_labels(record)["tune2serve-promo-share"] == "10-50"
    assert read_record(record_labels(record)) == record
    assert read_record({**record_labels(record), "tune2serve-promo-share": "x-1000-5"}).shares == (5,)
    e = OutsideChangeError("E", {"100": 50, NEW: 50}, {"100": 100, NEW: 0}, "during the bake")
    assert e.as_dict() == {"when": "during the bake", "expected_split": {"100": 50, NEW: 50},
                           "found_split": {"100": 100}}
    assert str(e).startswith("E: the traffic split was changed outside tune2serve during the bake: expected")
