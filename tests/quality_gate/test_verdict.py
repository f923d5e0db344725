"""The verdict rule (components/quality_gate/POLICY.md), held to its properties with
generated tallies: monotone in the candidate's failures and in the judged scores, a
garbage judge never promotes, the two orderings are interchangeable, a mirrored
comparison mirrors the verdict — and the worked examples the policy states."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.quality_gate import verdict as vd

SCORE = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])
OPTIONAL_SCORE = st.one_of(st.none(), SCORE)
SETTINGS = st.builds(vd.Settings, margin=st.sampled_from([0.0, 0.05, 0.2]), delta=st.sampled_from([0.0, 0.05, 0.2]),
                     min_pass_rate=st.sampled_from([0.5, 0.9, 1.0]), min_deciding=st.sampled_from([1, 10]))


@st.composite
def tallies(draw: st.DrawFn, judged: bool | None = None) -> vd.Tally:
    n = draw(st.integers(1, 60))
    with_judge = draw(st.booleans()) if judged is None else judged
    scores = tuple(draw(st.lists(OPTIONAL_SCORE, min_size=n, max_size=n))) if with_judge else ()
    return vd.Tally(n, draw(st.integers(0, n)), draw(st.integers(0, n)), scores, with_judge,
                    draw(st.sampled_from([0, 0, 1, 5])))


def test_wilson_is_the_textbook_interval() -> None:
    lo, hi = vd.wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)  # Wilson 1927; Newcombe 1998 table I
    assert vd.wilson(0, 0) == (0.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 500), st.data())
def test_wilson_holds_the_estimate_and_is_symmetric(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, 2 * n)) / 2
    lo, hi = vd.wilson(k, n)
    assert 0 <= lo <= k / n <= hi <= 1
    mirrored = vd.wilson(n - k, n)
    assert abs(lo - (1 - mirrored[1])) < 1e-9 and abs(hi - (1 - mirrored[0])) < 1e-9


@settings(max_examples=400, deadline=None)
@given(tallies(), SETTINGS, st.data())
def test_more_candidate_failures_never_improve_the_verdict(tally: vd.Tally, s: vd.Settings,
                                                           data: st.DataObject) -> None:
    worse = data.draw(st.integers(tally.candidate_failed, tally.cases))
    worse_tally = vd.Tally(tally.cases, worse, tally.baseline_failed, tally.scores, tally.judged, tally.unmeasured)
    assert vd.rank(vd.decide(worse_tally, s).verdict) <= vd.rank(vd.decide(tally, s).verdict)


@settings(max_examples=400, deadline=None)
@given(tallies(judged=True), SETTINGS, st.data())
def test_a_higher_judged_score_never_worsens_the_verdict(tally: vd.Tally, s: vd.Settings,
                                                         data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(tally.scores) - 1))
    old = tally.scores[i]
    if old is None:
        return
    better = data.draw(st.sampled_from([x for x in (0.0, 0.25, 0.5, 0.75, 1.0) if x >= old]))
    scores = tally.scores[:i] + (better,) + tally.scores[i + 1:]
    improved = vd.Tally(tally.cases, tally.candidate_failed, tally.baseline_failed, scores, True, tally.unmeasured)
    assert vd.rank(vd.decide(improved, s).verdict) >= vd.rank(vd.decide(tally, s).verdict)


@settings(max_examples=300, deadline=None)
@given(tallies(judged=True), SETTINGS)
def test_a_judge_that_never_answers_never_promotes(tally: vd.Tally, s: vd.Settings) -> None:
    garbage = vd.Tally(tally.cases, tally.candidate_failed, tally.baseline_failed, (None,) * tally.cases, True,
                       tally.unmeasured)
    decided = vd.decide(garbage, s)
    assert decided.verdict != "promote" and decided.deciding == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B", "tie", None]), st.sampled_from(["A", "B", "tie", None])),
                min_size=1, max_size=40), SETTINGS)
def test_the_two_orderings_are_interchangeable(pairs: list[tuple[str | None, str | None]], s: vd.Settings) -> None:
    """Asking the second ordering first changes no score and so no verdict."""
    def scores(swap: bool) -> tuple[float | None, ...]:
        out = []
        for first, second in pairs:  # first: candidate shown as A; second: candidate shown as B
            a, b = vd.order_score(first, "A"), vd.order_score(second, "B")
            out.append(vd.case_score(b, a) if swap else vd.case_score(a, b))
        return tuple(out)

    n = len(pairs)
    assert vd.decide(vd.Tally(n, 0, 0, scores(False), True), s) == vd.decide(vd.Tally(n, 0, 0, scores(True), True), s)


@settings(max_examples=300, deadline=None)
@given(tallies(), SETTINGS)
def test_a_mirrored_comparison_mirrors_the_verdict(tally: vd.Tally, s: vd.Settings) -> None:
    """Candidate and baseline change places: failures swap, every score becomes 1 - score.
    A candidate rejected as worse is, in the other seat, never rejected for it — and with
    equal failures and a judge, a reject is a promote the other way round."""
    mirrored = vd.Tally(tally.cases, tally.baseline_failed or 0, tally.candidate_failed,
                        tuple(None if x is None else 1 - x for x in tally.scores), tally.judged, tally.unmeasured)
    forward, backward = vd.decide(tally, s), vd.decide(mirrored, s)
    if not tally.judged and forward.verdict == "reject":
        assert backward.verdict == "promote"
    if tally.judged and tally.candidate_failed == tally.baseline_failed and forward.verdict == "reject":
        assert backward.verdict == "promote"


def test_the_margin_is_one_case_or_five_percent() -> None:
    assert [vd.allowance(n) for n in (1, 19, 20, 39, 40, 100)] == [1, 1, 1, 1, 2, 5]
    assert vd.decide(vd.Tally(100, 10, 5, (), False)).verdict == "promote"  # 5 more: at the margin
    rejected = vd.decide(vd.Tally(100, 11, 5, (), False))
    assert rejected.verdict == "reject" and "6 more, beyond the margin of 5" in rejected.rule


def test_judged_rules() -> None:
    wins = (1.0,) * 30 + (0.5,) * 10
    assert vd.decide(vd.Tally(40, 0, 0, wins, True)).verdict == "promote"
    losses = (0.0,) * 30 + (0.5,) * 10
    assert vd.decide(vd.Tally(40, 0, 0, losses, True)).verdict == "reject"
    even = (1.0, 0.0) * 10
    held = vd.decide(vd.Tally(20, 0, 0, even, True))
    assert held.verdict == "hold" and "neither shows" in held.rule
    few = vd.decide(vd.Tally(40, 0, 0, (1.0,) * 9 + (None,) * 31, True))
    assert few.verdict == "hold" and "fewer than the 20 needed" in few.rule


def test_first_promotion_uses_the_pass_rate() -> None:
    assert vd.decide(vd.Tally(10, 1, None)).verdict == "promote"
    assert vd.decide(vd.Tally(10, 2, None)).verdict == "reject"
    assert vd.decide(vd.Tally(10, 0, None), vd.Settings(min_pass_rate=1.0)).verdict == "promote"


def test_an_unmeasured_baseline_holds() -> None:
    held = vd.decide(vd.Tally(8, 0, 0, (), False, unmeasured=2))
    assert held.verdict == "hold" and "did not answer 2 case(s)" in held.rule
