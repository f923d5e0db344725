"""smoke-test against the local stack: the tuned model passes every check, the base
model is caught by the golden prompts, warm-up 503s are waited out, a replica that
keeps failing fails the step, and no token reaches the report or the logs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.demo.deployments import exported, stack_environ
from tune2serve.components.deploy.deploy import DeployResult, deploy_export
from tune2serve.components.deploy.request import DeploySpec
from tune2serve.components.vertex.machine_spec import MachineSpec
from tune2serve.components.smoke_test.report import render_markdown
from tune2serve.components.smoke_test.smoke import SmokeSettings, raise_if_failed, run_smoke_test
from tune2serve.components.vertex.retry import RetryPolicy
from tune2serve.cli.main import main
from tune2serve.demo.tuned_adapter import GOLDEN, golden_jsonl, write_golden

L4 = MachineSpec("g2-standard-12", "NVIDIA_L4", 1)
QUICK = SmokeSettings(warmup=RetryPolicy(0.2, 1.0, 2.0, 8, 20.0), retry=RetryPolicy(0.1, 0.5, 2.0, 3, 5.0))


@pytest.fixture(scope="module")
def deployments(local_stack, tmp_path_factory) -> dict[str, DeployResult]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("demo")
    out = {}
    with stack_environ(local_stack):
        for which in ("tuned", "base"):
            uri = exported(local_stack, root, which)
            out[which] = deploy_export(DeploySpec(uri, local_stack.project, local_stack.region, L4))
    return out


def test_tuned_model_passes_every_check(stack_env, deployments, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    golden = write_golden(tmp_path / "golden.jsonl")
    report = tmp_path / "report.md"
    code = main(["smoke-test", deployments["tuned"].endpoint.rsplit("/", 1)[-1], "--project", stack_env.project,
                 "--region", stack_env.region, "--golden", str(golden), "--report", str(report), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["ok"]
    kinds = {c["kind"] for c in doc["checks"]}
    assert kinds == {"chat", "chat_stream", "predict", "stream_raw_predict"}
    assert all(c["deployed_model_id"] == deployments["tuned"].deployed_model_id for c in doc["checks"])
    for case in GOLDEN:
        assert any(c["name"].startswith(case["name"]) and c["passed"] for c in doc["checks"])
    assert {"latency_p50_s", "latency_p95_s", "time_to_first_token_p50_s", "tokens_per_s"} <= set(doc["metrics"])
    assert doc["metrics"]["errors"] == 0 and "# Smoke test: PASSED" in report.read_text()
    page = (tmp_path / "report.html").read_text()  # the HTML report beside the Markdown
    assert '<header id="verdict" class="banner pass" data-ok="true">Smoke test: PASSED' in page
    assert page.count('<tr data-kind="') == len(doc["checks"])


def test_base_model_is_caught_by_the_golden_prompts(stack_env, deployments, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    golden = write_golden(tmp_path / "golden.jsonl")
    code = main(["smoke-test", deployments["base"].endpoint, "--project", stack_env.project,
                 "--region", stack_env.region, "--golden", str(golden)])
    err = capsys.readouterr().err
    assert code == 1
    assert "capital-of-france (chat, after warm-up): expected a match for /\\bparis\\b/" in err
    assert '"content": "what is the capital of france"' in err and "answer: '" in err


def test_warm_up_503s_are_retried_then_pass(stack_env, deployments) -> None:  # type: ignore[no-untyped-def]
    from tune2serve.localstack.faults import inject_fault

    tuned = deployments["tuned"]
    inject_fault(stack_env.api_endpoint, "http-503", target=tuned.deployed_model_id, count=2)
    result = run_smoke_test(tuned.endpoint, stack_env.project, stack_env.region, golden_jsonl(), settings=QUICK)
    assert result.passed
    assert result.checks[0].exchange is not None and result.checks[0].exchange.attempts == 3


def test_a_replica_that_keeps_failing_fails_the_step(stack_env, deployments) -> None:  # type: ignore[no-untyped-def]
    from tune2serve.components.errors import SmokeTestFailedError
    from tune2serve.localstack.faults import inject_fault

    base = deployments["base"]
    inject_fault(stack_env.api_endpoint, "http-503", target=base.deployed_model_id, count=1000)
    try:
        result = run_smoke_test(base.endpoint, stack_env.project, stack_env.region, "", settings=QUICK)
    finally:
        inject_fault(stack_env.api_endpoint, "clear")
    assert not result.passed and len(result.checks) == 1
    with pytest.raises(SmokeTestFailedError, match="503.*the endpoint kept failing; check that its replicas"):
        raise_if_failed(result)


def test_no_token_reaches_the_report_the_json_or_the_logs(stack_env, deployments) -> None:  # type: ignore[no-untyped-def]
    from tune2serve.components import logs
    from tune2serve.components.errors import SmokeTestFailedError

    secret = "ya29.a0FakeSecretTokenValue123"
    stream = io.StringIO()
    logs.configure(stream=stream)
    golden = '{"prompt": "what is the capital of france", "expect": "rome"}\n'  # fails: the message is printed too
    result = run_smoke_test(deployments["tuned"].endpoint, stack_env.project, stack_env.region, golden,
                            token_provider=lambda: secret, settings=QUICK)
    with pytest.raises(SmokeTestFailedError) as info:
        raise_if_failed(result)
    outputs = [render_markdown(result), json.dumps(result.to_json()), stream.getvalue(), str(info.value)]
    assert all(secret not in text and "a0FakeSecret" not in text for text in outputs)
    assert "smoke.check" in stream.getvalue()  # the log was written, and it is clean


def test_kfp_component_writes_metrics_and_report(stack_env, deployments, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kfp import dsl

    from tune2serve.components.smoke_test.component import smoke_test

    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"), metadata={})
    report = dsl.Markdown(name="report", uri=str(tmp_path / "report.md"), metadata={})
    page = dsl.HTML(name="report_html", uri=str(tmp_path / "report.html"), metadata={})
    outputs = smoke_test.python_func(endpoint=deployments["tuned"].endpoint, project=stack_env.project,
                                     region=stack_env.region, golden=golden_jsonl(), metrics=metrics, report=report,
                                     report_html=page)
    assert tuple(outputs) == (True,) and outputs._fields == ("passed",)
    assert metrics.metadata["errors"] == 0
    assert {"latency_p50_s", "latency_p95_s", "time_to_first_token_p50_s", "tokens_per_s"} <= set(metrics.metadata)
    text = Path(report.path).read_text()
    assert text.startswith("# Smoke test: PASSED") and deployments["tuned"].endpoint in text
    html = Path(page.path).read_text()
    assert '<header id="verdict" class="banner pass" data-ok="true">Smoke test: PASSED' in html
    checks = metrics.metadata["checks_passed"] + metrics.metadata.get("checks_failed", 0)
    assert html.count('<tr data-kind="') == checks and deployments["tuned"].endpoint in html


def test_a_backtracking_expect_fails_its_check_instead_of_hanging(stack_env, deployments, capsys,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:
    """The tuned model's real answer ("the capital of france is paris") against a pattern
    that backtracks for hours under ``re``: the check fails after its time limit, the
    step ends with exit 1 naming the case and the pattern, and the other checks ran."""
    import time

    pattern = r"^(.*?){25}(?!)"
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"name": "backtracking", "prompt": "what is the capital of france",
                                  "expect": pattern}) + "\n" + golden_jsonl(GOLDEN[1:]), encoding="utf-8")
    started = time.monotonic()
    code = main(["smoke-test", deployments["tuned"].endpoint, "--project", stack_env.project, "--region",
                 stack_env.region, "--golden", str(golden), "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and time.monotonic() - started < 120
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    failed = [c for c in checks.values() if not c["passed"]]
    assert failed and all(c["name"].startswith("backtracking") for c in failed)
    assert all(f'the "expect" pattern /{pattern}/ took more than 0.5 s' in c["detail"] for c in failed)
    assert any(name.startswith("color-of-the-sky") and c["passed"] for name, c in checks.items())
    assert "Traceback" not in err
