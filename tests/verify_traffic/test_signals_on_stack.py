"""The canary's LLM signals and force_promote on the local stack, through the CLI, the
real SDK and real streamed requests. The serving model is a tiny model trained to answer
the probe prompts and stop; the canaries are (a) the same weights with a broken eos — a
model that never stops, every answer a fast HTTP 200 — and (b) another deployment of the
model that stops. Tests run in file order on one production endpoint:

1. a hold from the quality gate promotes nothing (exit 1, nothing deployed);
2. the never-stopping canary, forced past a hold, is rolled back by its signals — the
   override overrules the quality judgment, not the canary — and the model that served
   before still serves, alone;
3. the good canary, forced past a reject, is promoted: the override is in --json, in one
   structured log line, in the endpoint's labels and in the promotion record.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tune2serve.components.verify_traffic.override import LOCAL_IDENTITY
from tune2serve.components.verify_traffic.record import FORCED, FORCED_BY, read_record

from tests.stack_fixtures import StackHandle
from tests.verify_traffic.conftest import Deployment, deploy_folder
from tests.verify_traffic.llm_models import CASES, break_eos, greedy_stops, make_stopping_model
from tests.verify_traffic.test_on_stack import api_for, served_by

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llm-signal-models")
    stops = make_stopping_model(root / "stops")
    never = break_eos(stops, root / "never-stops")
    for case in CASES:  # the premise, checked in-process before the stack relies on it
        assert greedy_stops(stops, case["prompt"]) == (True, case["answer"]), case
        assert not greedy_stops(never, case["prompt"])[0], case
    return {"stops": stops, "never": never}


@pytest.fixture(scope="module")
def serving(local_stack: StackHandle, models: dict[str, Path]) -> Deployment:
    return deploy_folder(local_stack, models["stops"], "sig-serving")


@pytest.fixture(scope="module")
def never_stops(local_stack: StackHandle, models: dict[str, Path]) -> Deployment:
    return deploy_folder(local_stack, models["never"], "sig-never-stops")


@pytest.fixture(scope="module")
def good(local_stack: StackHandle, models: dict[str, Path]) -> Deployment:
    return deploy_folder(local_stack, models["stops"], "sig-good")


def cli(stack: StackHandle, *argv: str) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """Runs the CLI; returns (exit code, its --json object, its JSON log lines)."""
    from tune2serve.cli.main import main

    logs = io.StringIO()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(logs):
            code = main([*argv, "--project", stack.project, "--region", stack.region, "--json"])
    finally:
        logging.getLogger("tune2serve").handlers.clear()
    lines = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    return code, json.loads(out.getvalue() or "{}"), lines


def promote_args(prod: Deployment, canary: Deployment, *extra: str) -> list[str]:
    return ["verify-traffic", prod.endpoint, "--model", canary.model, "--staging-endpoint", canary.endpoint,
            "--steps", "50,100", *extra]


@pytest.fixture
def json_logs(stack_env: StackHandle, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackHandle]:
    monkeypatch.setenv("TUNE2SERVE_LOG_FORMAT", "json")
    yield stack_env


def test_a_hold_promotes_nothing(json_logs: StackHandle, serving: Deployment, good: Deployment) -> None:
    code, out, _ = cli(json_logs, *promote_args(serving, good, "--quality-verdict", "hold"))
    assert code == 1 and out["outcome"] == "failed"
    assert "quality gate's verdict is hold" in out["evidence"]["reason"]
    assert out["evidence"]["override"] is None and out["evidence"]["steps"] == []
    state = api_for(json_logs).get_endpoint(serving.endpoint)
    assert [d.id for d in state.deployed_models] == [serving.deployed_model_id]
    assert served_by(serving) == {serving.deployed_model_id}


def test_a_canary_that_never_stops_is_rolled_back_though_every_answer_is_a_200(
        json_logs: StackHandle, serving: Deployment, never_stops: Deployment) -> None:
    code, out, logs = cli(json_logs, *promote_args(serving, never_stops, "--quality-verdict", "hold",
                                                   "--force-promote", "eval set predates the tune"))
    assert code == 1 and out["outcome"] == "rolled_back", out["evidence"]["reason"]
    step = out["evidence"]["steps"][0]
    canary_id = out["evidence"]["new_deployed_id"]
    assert step["models"][canary_id]["errors"] == 0 and step["models"][serving.deployed_model_id]["errors"] == 0
    signals = step["signals"]
    assert signals["canary"]["length_rate"] == 1.0 and signals["serving"]["length_rate"] == 0.0
    assert signals["reference"] == "this step"
    assert any("cut off at max_tokens" in f for f in step["failures"]), step["failures"]
    # forced past the hold, audited all the same
    assert out["evidence"]["override"]["overridden_verdict"] == "hold"
    assert [line["event"] for line in logs].count("promotion.forced") == 1
    state = api_for(json_logs).get_endpoint(serving.endpoint)
    assert state.serving_split() == {serving.deployed_model_id: 100}
    assert served_by(serving) == {serving.deployed_model_id}


def test_a_forced_promotion_is_audited_everywhere(json_logs: StackHandle, serving: Deployment, good: Deployment,
                                                 tmp_path: Path) -> None:
    from tune2serve.components.promotion_record.promotion_record import read_promotion_record, record_after_verify

    reason = "Judge model is being replaced; accepted by the on-call, ticket 123"
    code, out, logs = cli(json_logs, *promote_args(serving, good, "--quality-verdict", "reject",
                                                   "--force-promote", reason))
    assert code == 0 and out["outcome"] == "promoted", out["evidence"]["reason"]
    override = out["evidence"]["override"]
    assert override["reason"] == reason and override["overridden_verdict"] == "reject"
    assert override["identity"] == LOCAL_IDENTITY
    forced = [line for line in logs if line["event"] == "promotion.forced"]
    assert len(forced) == 1 and forced[0]["severity"] == "WARNING"
    assert (forced[0]["reason"], forced[0]["overridden_verdict"], forced[0]["identity"]) == (
        reason, "reject", LOCAL_IDENTITY)
    # both steps' signals passed: the same model, stopping on every prompt
    assert all(s["signals"]["passed"] for s in out["evidence"]["steps"])
    assert out["evidence"]["steps"][1]["signals"]["reference"] == "the 50% step"
    labels = api_for(json_logs).get_endpoint(serving.endpoint).labels
    assert labels[FORCED] == "reject" and labels[FORCED_BY] == "anonymous--local-stack--no-credentials-"
    assert read_record(labels).forced == "reject"
    assert served_by(serving) == {out["evidence"]["new_deployed_id"]}
    # the record beside the export keeps the override (verify-traffic's output, as the pipeline passes it)
    export = tmp_path / "exports" / "run-1"
    export.mkdir(parents=True)
    record_after_verify(str(export), endpoint=good.endpoint, model=good.model, outcome="promoted",
                        production_endpoint=serving.endpoint, override=json.dumps(override))
    kept = read_promotion_record(str(export))
    assert kept is not None and kept.override == override
