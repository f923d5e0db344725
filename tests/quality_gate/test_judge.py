"""The judge's prompt and the reading of its answers: the shipped prompt is package data
with every placeholder, placeholders are filled once (an answer quoting one stays as it
is), and an answer is read as A, B, tie — or as no judgment, never as a guess."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.errors import UsageError
from tune2serve.components.quality_gate import judge as jd


def test_the_shipped_prompt_is_package_data_and_complete() -> None:
    prompt = jd.default_prompt()
    assert jd.check_prompt(prompt, "shipped") == prompt and "{{reference}}" in prompt


@pytest.mark.parametrize(("text", "winner", "reason"), [
    ('{"winner": "A", "reason": "more accurate"}', "A", "more accurate"),
    ('Thinking... {"winner": "b", "reason": "x"}', "B", "x"),
    ('{"winner": "tie", "reason": "same"}', "tie", "same"),
    ("B", "B", ""), ("  tie. ", "tie", ""), ("Winner: A", "A", ""),
    ("", None, ""), ("the capital of france is paris", None, ""), ('{"winner": "C"}', None, ""),
    ('{"winner": "A" or "B" or "tie", "reason": "one sentence saying why"}', None, ""),
])
def test_answers_are_read_or_not(text: str, winner: str | None, reason: str) -> None:
    judged = jd.parse_judgment(text)
    assert (judged.winner, judged.reason) == (winner, reason)


def test_the_prompt_echoed_back_is_no_judgment() -> None:
    assert jd.parse_judgment(jd.default_prompt()).winner is None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="ABab"), max_size=200))
def test_text_without_a_or_b_is_never_a_win(text: str) -> None:
    assert jd.parse_judgment(text).winner in (None, "tie")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=40))
def test_placeholders_are_filled_once(question: str, a: str, b: str) -> None:
    filled = jd.fill("Q={{question}} A={{answer_a}} B={{answer_b}} R={{reference}}", question=question,
                     answer_a=a + "{{answer_b}}", answer_b=b, reference=None)
    assert filled == f"Q={question} A={a}{{{{answer_b}}}} B={b} R={jd.NO_REFERENCE}"


def test_a_prompt_without_the_answers_is_refused() -> None:
    with pytest.raises(UsageError, match=r"mine.txt: the judge prompt lacks \{\{answer_b\}\}"):
        jd.check_prompt("{{question}} {{answer_a}}", "mine.txt")


def test_gemini_goes_through_vertex_ais_openai_compatible_api() -> None:
    assert jd.gemini_url("https://us-central1-aiplatform.googleapis.com", "p", "us-central1") == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/endpoints/openapi/"
        "chat/completions")
