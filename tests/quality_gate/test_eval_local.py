"""tune2serve eval on the local stack, through the real SDK and real model servers: the
demo's tuned model (trained to answer the golden prompts) against its base model (which
does not) is promoted one way and rejected the other; the judge is a real model served by
the stack (the tiny tuned model: its judgments are poor, but both orders are sent, read,
and its garbage holds); the KFP component writes its reports and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.demo.deployments import exported, stack_environ
from tune2serve.cli.main import main
from tune2serve.components.deploy.deploy import DeployResult, deploy_export
from tune2serve.components.deploy.request import DeploySpec
from tune2serve.components.vertex.machine_spec import MachineSpec
from tune2serve.demo.tuned_adapter import GOLDEN

pytestmark = pytest.mark.stack

L4 = MachineSpec("g2-standard-12", "NVIDIA_L4", 1)
MAX_TOKENS = 32  # the tiny models know 512 positions: a judge prompt with two answers must fit


def eval_jsonl() -> str:
    return "".join(json.dumps({"name": c["name"], "prompt": c["prompt"], "expect": c["expect"], "tags": ["golden"],
                               "max_tokens": MAX_TOKENS}) + "\n" for c in GOLDEN)


@pytest.fixture(scope="module")
def deployments(local_stack, tmp_path_factory) -> dict[str, DeployResult]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("demo")
    out = {}
    with stack_environ(local_stack):
        for which in ("tuned", "base"):
            out[which] = deploy_export(DeploySpec(exported(local_stack, root, which), local_stack.project,
                                                  local_stack.region, L4))
    return out


def _eval(stack, candidate: str, *extra: str) -> list[str]:  # type: ignore[no-untyped-def]
    return ["eval", candidate, "--project", stack.project, "--region", stack.region, *extra]


def test_the_tuned_model_is_promoted_over_the_base(stack_env, deployments, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cases = tmp_path / "eval.jsonl"
    cases.write_text(eval_jsonl(), encoding="utf-8")
    code = main(_eval(stack_env, deployments["tuned"].endpoint, "--baseline", deployments["base"].endpoint,
                      "--eval-set", str(cases), "--report-dir", str(tmp_path / "reports"), "--json"))
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["verdict"] == "promote", doc["rule"]
    assert [c["name"] for c in doc["cases"]] == [c["name"] for c in GOLDEN]
    for case in doc["cases"]:
        assert all(c["passed"] for c in case["checks"]["candidate"])
        assert not all(c["passed"] for c in case["checks"]["baseline"])
    assert doc["metrics"]["candidate_pass_rate"] == 1.0 and doc["metrics"]["baseline_pass_rate"] == 0.0
    assert doc["eval_set"]["sha256"] and doc["judge"] is None
    assert (tmp_path / "reports" / "eval-report.md").read_text().startswith("# Quality gate: PROMOTE")


def test_the_base_model_is_rejected_against_the_tuned(stack_env, deployments, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cases = tmp_path / "eval.jsonl"
    cases.write_text(eval_jsonl(), encoding="utf-8")
    code = main(_eval(stack_env, deployments["base"].endpoint, "--baseline", deployments["tuned"].endpoint,
                      "--eval-set", str(cases)))
    out, err = capsys.readouterr()
    assert code == 1 and out.startswith("reject: deterministic checks: the candidate fails 3 case(s), the baseline 0")
    case_line = next(line for line in err.splitlines() if f"{cases}:1 capital-of-france: " in line)
    assert "expect: expected a match for /\\bparis\\b/" in case_line  # beside any other check it failed
    assert "Traceback" not in err


def test_a_first_promotion_scores_the_candidate_alone(stack_env, deployments, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cases = tmp_path / "eval.jsonl"
    cases.write_text(eval_jsonl(), encoding="utf-8")
    assert main(_eval(stack_env, deployments["tuned"].endpoint, "--eval-set", str(cases))) == 0
    assert capsys.readouterr().out.startswith("promote: no baseline (a first promotion): the candidate passes 3 of 3")
    assert main(_eval(stack_env, deployments["base"].endpoint, "--eval-set", str(cases))) == 1


def test_a_tiny_judge_is_asked_both_ways_and_its_garbage_holds(stack_env, deployments, capsys,  # type: ignore[no-untyped-def]
                                                               tmp_path: Path) -> None:
    cases = tmp_path / "eval.jsonl"
    cases.write_text(eval_jsonl(), encoding="utf-8")
    prompt = tmp_path / "judge.txt"
    prompt.write_text("{{question}}\nA: {{answer_a}}\nB: {{answer_b}}\nwinner?", encoding="utf-8")
    code = main(_eval(stack_env, deployments["tuned"].endpoint, "--baseline", deployments["base"].endpoint,
                      "--eval-set", str(cases), "--judge-endpoint", deployments["tuned"].endpoint,
                      "--judge-prompt", str(prompt), "--json"))
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["verdict"] == "hold" and "the judge decided" in doc["rule"]
    assert doc["judge"].startswith(f"endpoint {deployments['tuned'].endpoint}")
    assert doc["metrics"]["requests"] >= 4 * len(GOLDEN)  # candidate, baseline, and the judge twice
    for case in doc["cases"]:
        orderings = case["judge"]["orderings"]
        assert [o["candidate_as"] for o in orderings] == ["A", "B"]
        assert all(o["error"] is None for o in orderings)  # answered: the judge's text was read, not lost
        assert case["judge"]["score"] is None or 0 <= case["judge"]["score"] <= 1


def test_the_kfp_component_writes_reports_metrics_and_the_verdict(stack_env, deployments, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kfp import dsl

    from tune2serve.components.quality_gate.component import quality_gate

    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"), metadata={})
    md = dsl.Markdown(name="report_md", uri=str(tmp_path / "report.md"), metadata={})
    page = dsl.HTML(name="report_html", uri=str(tmp_path / "report.html"), metadata={})
    out = quality_gate.python_func(candidate_endpoint=deployments["tuned"].endpoint,
                                   baseline_endpoint=deployments["base"].endpoint, project=stack_env.project,
                                   region=stack_env.region, eval_set=eval_jsonl(), metrics=metrics, report_md=md,
                                   report_html=page)
    assert (out.verdict, out.proceed, len(out.eval_set_sha256), out.judge) == ("promote", True, 64, "")
    assert metrics.metadata["candidate_pass_rate"] == 1.0 and metrics.metadata["cases"] == len(GOLDEN)
    assert Path(md.path).read_text().startswith("# Quality gate: PROMOTE")
    assert "Quality gate: PROMOTE" in Path(page.path).read_text()
    skipped = quality_gate.python_func(candidate_endpoint=deployments["tuned"].endpoint, baseline_endpoint="",
                                       project=stack_env.project, region=stack_env.region, eval_set="",
                                       metrics=metrics, report_md=md, report_html=page)
    assert (skipped.verdict, skipped.proceed) == ("", True)
