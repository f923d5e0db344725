"""smoke-test's LLM signals on the local stack, through the CLI: the figures of the
candidate (answers cut off at max_tokens, empty answers, output tokens, TTFT, TPOT) and,
with --baseline, the same figures of the serving model beside them — a candidate that
never stops fails against one that stops (every answer a 200), the reverse passes.
The models: verify-traffic's (tests/verify_traffic/llm_models.py), one trained to answer
the prompts and stop, the same weights with a broken eos."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.stack_fixtures import StackHandle
from tests.verify_traffic.conftest import Deployment, deploy_folder
from tests.verify_traffic.llm_models import CASES, break_eos, make_stopping_model

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def deployed(local_stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Deployment]:
    root = tmp_path_factory.mktemp("smoke-signal-models")
    stops = make_stopping_model(root / "stops")
    never = break_eos(stops, root / "never-stops")
    return {"stops": deploy_folder(local_stack, stops, "smoke-stops"),
            "never": deploy_folder(local_stack, never, "smoke-never-stops")}


def smoke(stack: StackHandle, endpoint: str, golden: Path, capsys: pytest.CaptureFixture[str],
          *extra: str) -> tuple[int, dict[str, Any]]:
    from tune2serve.cli.main import main

    try:
        code = main(["smoke-test", endpoint, "--project", stack.project, "--region", stack.region,
                     "--golden", str(golden), "--json", *extra])
    finally:
        logging.getLogger("tune2serve").handlers.clear()
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    path = tmp_path / "golden.jsonl"
    path.write_text("".join(json.dumps({"name": f"case-{i}", "prompt": c["prompt"]}) + "\n"
                            for i, c in enumerate(CASES)))
    return path


def test_the_candidates_figures_are_reported(stack_env: StackHandle, deployed: dict[str, Deployment],
                                             golden: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = smoke(stack_env, deployed["never"].endpoint, golden, capsys)
    assert code == 0, [c for c in doc["checks"] if not c["passed"]]  # alone, a model that never stops is reported
    figures = doc["signals"]["candidate"]
    assert figures["length_rate"] == 1.0 and figures["empty_rate"] == 0.0
    assert figures["mean_output_tokens"] == 16.0  # the golden cases' max_tokens
    assert figures["ttft_samples"] == len(CASES) and figures["ttft_p95_ms"] > 0 and figures["tpot_p50_ms"] > 0
    assert doc["metrics"]["length_rate"] == 1.0 and "baseline" not in doc["signals"]


def test_a_candidate_that_never_stops_fails_against_its_baseline(
        stack_env: StackHandle, deployed: dict[str, Deployment], golden: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = smoke(stack_env, deployed["never"].endpoint, golden, capsys, "--baseline", deployed["stops"].endpoint)
    assert code == 1
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["LLM signals vs baseline"], failed
    assert "cut off at max_tokens" in failed[0]["detail"]
    assert all(c["passed"] for c in doc["checks"] if c["kind"] in ("chat", "chat_stream"))  # every answer fine
    s = doc["signals"]
    assert (s["candidate"]["length_rate"], s["baseline"]["length_rate"]) == (1.0, 0.0)
    assert s["baseline_endpoint"] == deployed["stops"].endpoint and not s["comparison"]["passed"]
    assert doc["metrics"]["baseline_length_rate"] == 0.0


def test_a_candidate_that_stops_passes_against_one_that_does_not(
        stack_env: StackHandle, deployed: dict[str, Deployment], golden: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = smoke(stack_env, deployed["stops"].endpoint, golden, capsys, "--baseline", deployed["never"].endpoint)
    assert code == 0, [c for c in doc["checks"] if not c["passed"]]
    s = doc["signals"]
    assert (s["candidate"]["length_rate"], s["baseline"]["length_rate"]) == (0.0, 1.0)
    assert s["comparison"]["passed"] and s["comparison"]["reference"] == deployed["never"].endpoint
