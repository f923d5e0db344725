"""End to end on the local stack: the compiled pipeline, run by kfp.local through the main
job, with real fake-gcs-server, the local Vertex server and `transformers serve`.

One module-scoped story, each test a promotion people actually do:
1. a good tuned adapter is promoted to a new endpoint (standalone) and answers;
2. the next good one is promoted onto that serving endpoint (canary, then 100%);
3. a broken checkpoint stops at validate and deploys nothing;
4. a model that fails its golden prompts is rolled back: the old one still serves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.stack]

PROMPT, ANSWER = "what is the capital of france", "paris"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's tiny base model and its tuned LoRA adapter (trained once)."""
    from tune2serve.demo.tiny_models import make_tiny_model
    from tune2serve.demo.tuned_adapter import make_tuned_adapter

    root = tmp_path_factory.mktemp("e2e-models")
    base = make_tiny_model(root / "base")
    return {"base": base, "adapter": make_tuned_adapter(base, root / "adapter")}


@pytest.fixture(scope="module")
def uploaded(demo: dict[str, Path], local_stack: Any) -> dict[str, str]:
    import os

    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        broken = demo["base"].parent / "broken"
        shutil.copytree(demo["base"], broken)
        config = json.loads((broken / "config.json").read_text())
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}  # remote code
        (broken / "config.json").write_text(json.dumps(config))
        return {name: local_stack.upload(path, f"e2e/{name}") for name, path in
                (("base", demo["base"]), ("adapter", demo["adapter"]), ("broken", broken))}
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)


def run(local_stack: Any, source: str, base_model: str = "", production: str = "", golden: str | None = None,
        tmp: Path | None = None, eval_set: str = "") -> Any:
    from tune2serve.demo.tuned_adapter import golden_jsonl
    from tune2serve.pipelines.main_job import JobOptions, run_job

    assert tmp is not None
    golden_file = tmp / "golden.jsonl"
    golden_file.write_text(golden_jsonl() if golden is None else golden)
    eval_file = None
    if eval_set:
        eval_file = tmp / "eval.jsonl"
        eval_file.write_text(eval_set)
    opts = JobOptions(source=source, base_model=base_model, production_endpoint=production,
                      golden_file=str(golden_file), home=str(local_stack.home),
                      eval_set_file=str(eval_file) if eval_file else None)
    return run_job(opts)


def eval_cases() -> str:
    """The demo's golden prompts as the quality gate's eval set: the tuned model answers
    them, its base does not."""
    from tune2serve.demo.tuned_adapter import GOLDEN

    return "".join(json.dumps({"name": c["name"], "prompt": c["prompt"], "expect": c["expect"], "max_tokens": 32}) + "\n"
                   for c in GOLDEN)


@pytest.fixture(scope="module")
def first_promotion(local_stack: Any, uploaded: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The standalone promotion of a good adapter. The later stories promote onto, or
    roll back on, the endpoint it leaves serving, whichever of them runs first."""
    from tune2serve.pipelines.kfp_local import environment

    with environment(local_stack.env):
        return run(local_stack, uploaded["adapter"], uploaded["base"], tmp=tmp_path_factory.mktemp("first"))


def serving_endpoint(first_promotion: Any) -> str:
    assert first_promotion.ok, f"the first promotion failed: {first_promotion.message}"
    return str(first_promotion.endpoint)


def vertex(local_stack: Any) -> Any:
    from tune2serve.components.vertex.clients import target

    return target(local_stack.project, local_stack.region)


def endpoint_state(local_stack: Any, name: str) -> Any:
    from tune2serve.components.vertex.endpoints import get_endpoint

    return get_endpoint(vertex(local_stack), name)


def resources(local_stack: Any) -> tuple[dict[str, dict[str, str]], set[str]]:
    """Every endpoint (name → labels) and every model name on the stack, read over REST."""
    from tune2serve.components.vertex.clients import http_client

    v = vertex(local_stack)
    with http_client(v) as client:
        endpoints = client.get(f"{v.rest_base_url}/v1/{v.parent}/endpoints").json().get("endpoints", [])
        models = client.get(f"{v.rest_base_url}/v1/{v.parent}/models").json().get("models", [])
    return {e["name"]: e.get("labels", {}) for e in endpoints}, {m["name"] for m in models}


def endpoints_of_run(local_stack: Any, run_name: str) -> list[str]:
    from tune2serve.components.vertex.resources import sanitize_label_value

    label = sanitize_label_value(run_name)
    return [name for name, labels in resources(local_stack)[0].items() if labels.get("tune2serve-run") == label]


def ask(local_stack: Any, endpoint: str) -> dict[str, Any]:
    """One real chat completion through the endpoint's dedicated data plane."""
    import ssl

    import httpx

    state = endpoint_state(local_stack, endpoint)
    url = f"https://{state.dedicated_endpoint_dns}/v1beta1/{endpoint}/chat/completions"
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16, "temperature": 0}
    response = httpx.post(url, json=body, timeout=60,
                          verify=ssl.create_default_context(cafile=local_stack.env["REQUESTS_CA_BUNDLE"]))
    response.raise_for_status()
    return dict(response.json())


def test_good_adapter_is_promoted_to_a_new_endpoint(stack_env: Any, local_stack: Any, first_promotion: Any) -> None:
    result = first_promotion
    assert result.ok, result.message
    assert result.outcome == "verified"
    steps = ("export-plan", "export-worker", "export-commit", "validate", "deploy", "smoke-test", "verify-traffic",
             "finalize")
    assert [s for s in result.timings if s in steps] == list(steps)  # a small model: one export worker
    answer = ask(local_stack, result.endpoint)
    assert ANSWER in answer["choices"][0]["message"]["content"]
    state = endpoint_state(local_stack, result.endpoint)
    assert list(state.traffic_split.values()) == [100]
    # the run id placeholder resolved under kfp.local: the endpoint carries the run's label
    assert endpoints_of_run(local_stack, result.run_name) == [result.endpoint]
    assert result.model in resources(local_stack)[1]
    assert {"validate.html", "verify-traffic.html", "smoke-test.md", "smoke-test.html"} <= set(result.reports)
    assert result.curl.startswith(f"curl --cacert {local_stack.env['REQUESTS_CA_BUNDLE']}")


def test_the_demo_on_weights_already_serving_says_so_and_does_nothing(
        stack_env: Any, local_stack: Any, demo: dict[str, Path], first_promotion: Any) -> None:
    """`make demo` again on unchanged weights: the promotion record beside the export it
    promoted (its manifest digest still the export's) and the endpoint still serving that
    model are proof enough — nothing is exported, deployed or shifted, and the answer says
    where they serve and how to promote them again anyway. Other weights are promoted."""
    from tune2serve.pipelines.main_job import (JobOptions, already_serving, demo_recipe, run_job, summary_text,
                                               weights_digest)

    assert first_promotion.ok, first_promotion.message
    home = local_stack.home
    shutil.rmtree(home / "demo", ignore_errors=True)
    shutil.copytree(demo["base"], home / "demo" / "base")
    shutil.copytree(demo["adapter"], home / "demo" / "tuning-output")
    (home / "demo" / ".complete").write_text(demo_recipe())  # the demo's own recipe: the folders are not remade
    weights = weights_digest(home / "demo" / "base", home / "demo" / "tuning-output")
    (home / "demo" / "serving.json").write_text(json.dumps(
        {"endpoint": first_promotion.endpoint, "export": first_promotion.export, "weights": weights}))
    runs = sorted((home / "runs").iterdir())
    try:
        result = run_job(JobOptions(home=str(home)))
        assert result.ok and result.outcome == "skipped", result.message
        assert str(result.message).startswith(f"already serving these weights: model {first_promotion.model} on "
                                              f"{first_promotion.endpoint} (export {first_promotion.export}, manifest "
                                              "digest ")
        assert sorted((home / "runs").iterdir()) == runs  # no pipeline ran
        assert result.curl == first_promotion.curl and result.endpoint == first_promotion.endpoint
        text = summary_text(result)
        assert f"promote these weights again anyway: tune2serve run --again --home {home}" in text
        assert f"stop the local stack: tune2serve local down --home {home}" in text
        assert already_serving(home, weights, local_stack.project, local_stack.region) is not None
        assert already_serving(home, "0" * 64, local_stack.project, local_stack.region) is None  # other weights
        (home / "demo" / "tuning-output" / "adapter_config.json").write_text(
            (home / "demo" / "tuning-output" / "adapter_config.json").read_text() + " ")
        assert weights_digest(home / "demo" / "base", home / "demo" / "tuning-output") != weights
    finally:
        shutil.rmtree(home / "demo", ignore_errors=True)


def test_good_adapter_is_promoted_onto_the_serving_endpoint(stack_env: Any, local_stack: Any, uploaded: dict[str, str],
                                                            first_promotion: Any, tmp_path: Path) -> None:
    production = serving_endpoint(first_promotion)
    result = run(local_stack, uploaded["adapter"], uploaded["base"], production=production, tmp=tmp_path)
    assert result.ok, result.message
    assert result.outcome == "promoted" and result.endpoint == production
    state = endpoint_state(local_stack, production)
    (only,) = state.deployed_models  # the old model was retired
    assert only.model == result.model and state.traffic_split == {only.id: 100}
    assert endpoints_of_run(local_stack, result.run_name) == []  # the staging endpoint deploy made is gone
    assert ANSWER in ask(local_stack, production)["choices"][0]["message"]["content"]


def test_broken_checkpoint_stops_at_validate_and_deploys_nothing(stack_env: Any, local_stack: Any, uploaded: dict[str, str],
                                                                 tmp_path: Path) -> None:
    before = resources(local_stack)
    result = run(local_stack, uploaded["broken"], tmp=tmp_path)
    assert not result.ok
    assert result.failed_step == "reject" and result.outcome == "rejected"
    assert "validation failed, nothing was deployed" in (result.message or "")
    assert "deploy" not in result.timings
    assert resources(local_stack) == before  # no endpoint, no model
    assert "validate.html" in result.reports


def test_model_failing_golden_prompts_is_rolled_back(stack_env: Any, local_stack: Any, uploaded: dict[str, str],
                                                     first_promotion: Any, tmp_path: Path) -> None:
    production = serving_endpoint(first_promotion)
    before, made_before = endpoint_state(local_stack, production), resources(local_stack)
    # the untuned base model does not know the golden answers
    result = run(local_stack, uploaded["base"], production=production, tmp=tmp_path)
    assert not result.ok
    assert result.failed_step == "smoke-test" and result.outcome == "rolled_back"
    # a plain Hugging Face folder, already deployable: export passed it through, no copy
    assert f"{uploaded['base']} is already a deployable folder" in Path(result.log).read_text()
    endpoints_after, models_after = resources(local_stack)
    assert endpoints_after == made_before[0]  # finalize removed the staging endpoint the run made
    after = endpoint_state(local_stack, production)
    assert after.traffic_split == before.traffic_split
    assert [d.model for d in after.deployed_models] == [d.model for d in before.deployed_models]
    answer = ask(local_stack, production)
    assert ANSWER in answer["choices"][0]["message"]["content"]
    assert answer["deployedModelId"] == before.deployed_models[0].id
    assert models_after == made_before[1]  # ... and the model it registered


def test_the_quality_gate_rejects_a_worse_candidate_and_promotes_one_no_worse(
        stack_env: Any, local_stack: Any, uploaded: dict[str, str], first_promotion: Any, tmp_path: Path) -> None:
    """The compiled pipeline given an eval set: the untuned base against the tuned model
    serving (a golden prompt any model passes, so it reaches the gate) is rejected by the
    quality gate and the serving model is untouched; the tuned adapter against itself is
    no worse, and is promoted."""
    production = serving_endpoint(first_promotion)
    before, made_before = endpoint_state(local_stack, production), resources(local_stack)
    anything = json.dumps({"name": "answers", "prompt": PROMPT, "expect": "."}) + "\n"
    (tmp_path / "worse").mkdir()
    (tmp_path / "better").mkdir()
    worse = run(local_stack, uploaded["base"], production=production, golden=anything, tmp=tmp_path / "worse",
                eval_set=eval_cases())
    assert not worse.ok, worse.message
    assert "smoke-test" in worse.timings and "quality-gate" in worse.timings  # it passed smoke-test, met the gate
    assert Path(worse.reports["quality-gate.md"]).read_text().startswith("# Quality gate: REJECT")
    after = endpoint_state(local_stack, production)
    assert after.traffic_split == before.traffic_split
    assert [d.model for d in after.deployed_models] == [d.model for d in before.deployed_models]
    assert resources(local_stack) == made_before  # finalize removed what the run made
    assert ANSWER in ask(local_stack, production)["choices"][0]["message"]["content"]

    better = run(local_stack, uploaded["adapter"], uploaded["base"], production=production,
                 tmp=tmp_path / "better", eval_set=eval_cases())
    assert better.ok and better.outcome == "promoted", better.message
    assert ANSWER in ask(local_stack, production)["choices"][0]["message"]["content"]
