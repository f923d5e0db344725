"""validate and vLLM agree on every mutation of the catalogue (tests/vllm/mutations.py).

Each mutation is applied to a good export; vLLM loads and queries it (the same prompts
and chat request as the unmutated export, whose vLLM answers are the baseline) and its
behaviour is classified: **refuses** (no load, or the request fails, with vLLM's own
error), **misbehaves** (greedy tokens or logprobs other than the baseline's, or a chat
answer that no longer stops where it did), **identical**. Then validate runs on the same
folder. They must agree both ways: vLLM refuses or misbehaves ⇔ validate has an error
finding; a mutation vLLM serves identically is accepted (warnings allowed), unless Vertex
AI itself will not import it (``VERTEX_RULES``: quantized weights). The observed
behaviour must also be the one the catalogue states, so a vLLM that changes its mind is
noticed.

Default suite: every mutation on one architecture (``DEFAULT_MUTATION_ARCHITECTURES``)
plus the architecture-specific ones; ``make test-vllm`` (``TUNE2SERVE_VLLM_MATRIX=1``):
every mutation on every architecture vLLM's CPU backend runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.vllm import models
from tests.vllm.conftest import DEFAULT_MUTATION_ARCHITECTURES, MATRIX, vllm_job
from tests.vllm.mutations import CATALOGUE, Behaviour, Mutation, applied
from tests.vllm.runner import Batch, run_batch
from tests.vllm.test_parity import HEADERS_ONLY
from tune2serve.components.validate import validate_checkpoint

# Findings that refuse what Vertex AI itself will not import (DESIGN.md: no quantized models), whatever
# vLLM would do with the folder: they stand where vLLM serves the mutation identically.
VERTEX_RULES = frozenset({"quantized-weights"})
LOGPROB_TOLERANCE = 0.05  # same engine, same prompts: only a change of the model moves them more


def _architectures() -> list[str]:
    keys = sorted(models.SPECS) if MATRIX else list(DEFAULT_MUTATION_ARCHITECTURES)
    return [k for k in keys if k not in HEADERS_ONLY]


def _cases() -> list[tuple[str, Mutation]]:
    archs = _architectures()
    cases = [(k, m) for k in archs for m in CATALOGUE if m.architecture is None]
    cases += [(m.architecture, m) for m in CATALOGUE if m.architecture and m.architecture not in HEADERS_ONLY]
    return cases


CASES = _cases()


@pytest.fixture(scope="session")
def mutated(exports: dict[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{case id: mutated folder} for every case whose good folder has what it changes."""
    root = tmp_path_factory.mktemp("vllm-mutations")
    out: dict[str, Path] = {}
    for key, mutation in CASES:
        good = exports[key]["full"]
        if mutation.applies_to(key, good):
            out[f"{key}/{mutation.name}"] = applied(mutation, good, root / f"{key}-{mutation.name}")
    return out


@pytest.fixture(scope="session")
def mutation_batch(mutated: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Batch:
    jobs = [vllm_job(case, folder, case.split("/", 1)[0]) for case, folder in mutated.items()]
    return run_batch(jobs, tmp_path_factory.mktemp("vllm-mutation-batch"))


def behaviour(baseline: dict[str, Any], got: dict[str, Any]) -> tuple[Behaviour, str]:
    """How vLLM treated the mutated folder, against the unmutated one, and why."""
    if not got["loaded"]:
        return "refuses", got["error"]
    for i, p in enumerate(got["prompts"]):
        if "error" in p:
            return "refuses", f"prompt {i}: {p['error']}"
    if "error" in got["chat"]:
        return "refuses", f"chat: {got['chat']['error']}"
    for i, (base, mine) in enumerate(zip(baseline["prompts"], got["prompts"])):
        if base["tokens"] != mine["tokens"]:
            return "misbehaves", f"prompt {i}: tokens {mine['tokens']} instead of {base['tokens']}"
        for step, (a, b) in enumerate(zip(base["top_logprobs"], mine["top_logprobs"])):
            tok = str(base["tokens"][step])
            if abs(a[tok] - b.get(tok, float("-inf"))) > LOGPROB_TOLERANCE:
                return "misbehaves", f"prompt {i} step {step}: logprob {b.get(tok)} instead of {a[tok]}"
    base_chat, chat = baseline["chat"], got["chat"]
    if (chat["tokens"], chat["finish_reason"]) != (base_chat["tokens"], base_chat["finish_reason"]):
        return "misbehaves", (f"chat: {len(chat['tokens'])} tokens, finish {chat['finish_reason']!r} instead of "
                              f"{len(base_chat['tokens'])}, {base_chat['finish_reason']!r}")
    return "identical", "greedy tokens, logprobs and the chat answer equal the unmutated folder's"


@pytest.mark.parametrize(("key", "mutation"), [pytest.param(k, m, id=f"{k}-{m.name}", marks=(
    [] if (k in DEFAULT_MUTATION_ARCHITECTURES or m.architecture) else [pytest.mark.vllm_matrix])) for k, m in CASES])
def test_validate_agrees_with_vllm(key: str, mutation: Mutation, mutated: dict[str, Path], mutation_batch: Batch,
                                   parity_batch: Batch) -> None:
    case = f"{key}/{mutation.name}"
    if case not in mutated:
        pytest.skip(f"{key}'s export has nothing {mutation.name} changes")
    baseline = parity_batch.results[f"{key}/full/vllm"]
    assert baseline["loaded"], baseline.get("error")
    got = mutation_batch.results.get(case)
    assert got is not None, f"the vLLM process died before {case}: {mutation_batch.stderr_tail}"
    observed, why = behaviour(baseline, got)

    report = validate_checkpoint(str(mutated[case]))
    errors = [f"{f.code}: {f.message}" for f in report.findings if f.severity == "error"]
    if observed == "identical":
        for_vllm = [e for e in errors if e.split(":", 1)[0] not in VERTEX_RULES]
        assert not for_vllm, f"vLLM serves {case} identically ({why}) but validate refuses it: {for_vllm}"
    else:
        assert errors, f"vLLM {observed} on {case} ({why}) but validate calls it deployable"
    expected = mutation.expected(key)
    assert observed == expected, f"{case}: the catalogue says vLLM {expected}, it {observed}: {why}"
