"""The pairwise judge: an OpenAI-compatible chat endpoint asked, for each case, which of
two answers is better — once with the candidate shown as A, once as B, so a judge's
preference for a position cancels out. Ties are allowed.

Where the judge is:
- a Vertex AI endpoint serving a judge model (``--judge-endpoint``): its dedicated DNS,
  chat completions, through the same data-plane client smoke-test uses;
- Gemini through Vertex AI's OpenAI-compatible API (``--judge-model google/gemini-...``
  alone): ``https://{region}-aiplatform.googleapis.com/v1/projects/{p}/locations/{r}/
  endpoints/openapi/chat/completions``.
Either way the bearer token comes from Application Default Credentials in the
environment (``clients.access_token``), never from a flag, a parameter or a file, and is
never reported.

The prompt is ``judge_prompt.txt`` beside this module (shipped as package data) or the
user's file (``--judge-prompt FILE``); it must hold ``{{question}}``, ``{{answer_a}}`` and
``{{answer_b}}`` and may hold ``{{reference}}``, each replaced once (an answer that itself
contains ``{{answer_b}}`` stays as it is). The judge is asked for one JSON object
``{"winner": "A"|"B"|"tie", "reason": "..."}``; ``parse_judgment`` also accepts a bare
"A"/"B"/"tie" or a "winner: A" line. Anything else — an empty answer, prose, a failed
request — is no judgment, and a case with no judgment in either order decides nothing
(see verdict.py: a garbage judge never promotes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tune2serve.components import user_input
from tune2serve.components.errors import UsageError

PLACEHOLDERS = ("question", "reference", "answer_a", "answer_b")
REQUIRED = ("question", "answer_a", "answer_b")
_PLACEHOLDER = re.compile(r"\{\{(question|reference|answer_a|answer_b)\}\}")
# "winner: A", but not the prompt's own "winner": "A" or "B" echoed back
_WINNER_LINE = re.compile(r"(?i)\b(?:winner|verdict)\b\W{0,4}(A|B|tie)\b(?!\W{0,3}or\b)")
_BARE = re.compile(r"(?i)^\W*(A|B|tie)\W*$")
_OBJECT = re.compile(r"\{[^{}]*\}")
MAX_PROMPT_BYTES = 64 * 1024
MAX_REASON_CHARS = 500
JUDGE_MAX_TOKENS = 256
NO_REFERENCE = "(none given)"


def default_prompt() -> str:
    """The shipped judge prompt (package data)."""
    return resources.files("tune2serve.components.quality_gate").joinpath("judge_prompt.txt").read_text("utf-8")


def check_prompt(template: str, source: str) -> str:
    """``template`` unchanged, or ``UsageError`` naming ``source`` when a required
    placeholder is missing."""
    missing = [p for p in REQUIRED if "{{" + p + "}}" not in template]
    if missing:
        raise UsageError(f"{source}: the judge prompt lacks {', '.join('{{' + m + '}}' for m in missing)}; it must "
                         "hold {{question}}, {{answer_a}} and {{answer_b}} (and may hold {{reference}})", file=source)
    return template


def load_prompt(path: str | None) -> str:
    """The user's judge prompt (size-checked, exit 2 when unreadable) or the shipped one."""
    if not path:
        return default_prompt()
    return check_prompt(user_input.read_text_file(path, "--judge-prompt", max_bytes=MAX_PROMPT_BYTES), path)


def fill(template: str, *, question: str, answer_a: str, answer_b: str, reference: str | None) -> str:
    """The prompt with each placeholder replaced once, in one pass (values are not re-read)."""
    values = {"question": question, "answer_a": answer_a, "answer_b": answer_b,
              "reference": reference if reference is not None else NO_REFERENCE}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Judgment:
    """One ordering's judgment: ``winner`` "A", "B", "tie" or None (no judgment)."""

    winner: str | None
    reason: str = ""
    error: str | None = None  # the request failed
    text: str = ""  # the judge's answer, shortened (shown when it could not be read)


def _winner(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    word = value.strip().strip(".").casefold()
    return {"a": "A", "b": "B", "tie": "tie", "answer a": "A", "answer b": "B"}.get(word)


def parse_judgment(text: str) -> Judgment:
    """The judge's answer read: the last JSON object with a readable "winner", else a
    "winner: X" line, else a bare A/B/tie; otherwise no judgment."""
    shown = text[:MAX_REASON_CHARS]
    for candidate in reversed(_OBJECT.findall(text)):
        try:
            doc = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and (winner := _winner(doc.get("winner"))):
            reason = doc.get("reason")
            return Judgment(winner, str(reason)[:MAX_REASON_CHARS] if isinstance(reason, str) else "", text=shown)
    if (line := _WINNER_LINE.search(text)) or (line := _BARE.match(text)):
        return Judgment(_winner(line.group(1)), "", text=shown)
    return Judgment(None, "", text=shown)


@dataclass(frozen=True)
class JudgeConfig:
    """Where the judge is and what it is asked. ``label`` is what reports and the
    promotion record name (the endpoint or the model; never a credential)."""

    url: str
    model: str
    prompt: str
    label: str


def gemini_url(base_url: str, project: str, region: str) -> str:
    """Vertex AI's OpenAI-compatible chat completions for Gemini (and other MaaS models)."""
    return f"{base_url}/v1/projects/{project}/locations/{region}/endpoints/openapi/chat/completions"


__all__ = ["JUDGE_MAX_TOKENS", "JudgeConfig", "Judgment", "check_prompt", "default_prompt", "fill", "gemini_url",
           "load_prompt", "parse_judgment"]
