"""The tolerance rule for vLLM's greedy tokens against the transformers reference.

Rule: walk the greedy steps of a prompt together. Where the reference's top-two logit
margin is at least ``MARGIN`` (clear), vLLM's token must equal the reference's. At the
first step where the margin is below it (a near-tie: vLLM's bf16 kernels may pick the
other token, and both continuations are then right), comparison of that prompt stops —
unless both chose the same token, in which case it goes on. A run must compare at least
``MIN_CLEAR`` clear steps in all, so the check cannot pass by comparing nothing.

Why these numbers: the reference runs in float32, vLLM in bf16 (the exported dtype);
bf16 carries 8 significant bits, so logits of a few units (the tiny models' output layer
is scaled to spread them, tests/vllm/models.py) differ by a few hundredths — 0.5 is an
order of magnitude above what that rounding moves, and far below a wrong kernel's error.
"""

from __future__ import annotations

from dataclasses import dataclass

MARGIN = 0.5
MIN_CLEAR = 12


@dataclass(frozen=True)
class Comparison:
    clear_steps: int  # steps compared with a clear margin (all equal, or mismatch is set)
    mismatch: str | None  # the first clear step where vLLM chose otherwise


def compare(reference: list[int], margins: list[float], got: list[int], prompt: int = 0) -> Comparison:
    """One prompt's greedy tokens under the rule above."""
    clear = 0
    for step, (ref, margin, tok) in enumerate(zip(reference, margins, got)):
        if margin < MARGIN:
            if ref != tok:
                break
            continue
        if ref != tok:
            return Comparison(clear, f"prompt {prompt} step {step}: vLLM chose {tok}, the reference {ref} with a "
                                     f"clear margin {margin:.3f} >= {MARGIN}")
        clear += 1
    if len(got) < len(reference):
        return Comparison(clear, f"prompt {prompt}: vLLM gave {len(got)} tokens of the {len(reference)} asked")
    return Comparison(clear, None)
