"""``tune2serve eval CANDIDATE_ENDPOINT --baseline ENDPOINT --eval-set FILE --project P
--region R [--json]`` (DESIGN.md §4): the quality gate. Every case of the eval set goes to
both endpoints, is checked, optionally judged in both orders, and a verdict is decided by
the rule of components/quality_gate/POLICY.md.

Exit 0 promote · 1 hold or reject (the rule and the regressed cases, said on stderr) ·
2 usage error (a bad flag, an unreadable or malformed eval set or judge prompt).
Without --baseline (a first promotion) the candidate's pass rate decides alone.
Stdlib-only imports at top level.
"""

from __future__ import annotations

import argparse
import json
import sys

from tune2serve.components import ranges  # stdlib-only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("candidate", metavar="CANDIDATE_ENDPOINT",
                        help="the candidate's endpoint (resource name or id), e.g. the one deploy made")
    parser.add_argument("--baseline", metavar="ENDPOINT", default="",
                        help="the serving model's endpoint to compare with; omit it for a first promotion (the "
                        "candidate alone against --min-pass-rate)")
    parser.add_argument("--eval-set", metavar="FILE", required=True,
                        help='JSON Lines, one case a line: {"prompt": str} or {"messages": [...]}, optional '
                        '"reference", "expect" (regex), "json_schema", "tags", "max_tokens", "name"')
    parser.add_argument("--project", required=True, help="Google Cloud project")
    parser.add_argument("--region", required=True, help="Vertex AI region")
    parser.add_argument("--judge-endpoint", metavar="ENDPOINT", default="",
                        help="a Vertex AI endpoint serving a judge model (chat completions); credentials from the "
                        "environment (ADC)")
    parser.add_argument("--judge-model", metavar="MODEL", default="",
                        help="the judge's model name; alone (no --judge-endpoint) a model through Vertex AI's "
                        "OpenAI-compatible API, e.g. google/gemini-2.0-flash")
    parser.add_argument("--judge-prompt", metavar="FILE",
                        help="replace the shipped judge prompt (components/quality_gate/judge_prompt.txt); it must "
                        "hold {{question}}, {{answer_a}}, {{answer_b}} and may hold {{reference}}")
    parser.add_argument("--margin", type=ranges.EVAL_MARGIN.from_text, default=0.05,
                        help=ranges.EVAL_MARGIN.help("reject when the candidate fails more cases than the baseline "
                                                     "by more than max(1, this x cases) (default 0.05)"))
    parser.add_argument("--delta", type=ranges.EVAL_DELTA.from_text, default=0.05,
                        help=ranges.EVAL_DELTA.help("non-inferiority margin: promote when the judged win rate's "
                                                    "lower 95%% bound is above 0.5 - this (default 0.05)"))
    parser.add_argument("--min-pass-rate", type=ranges.EVAL_MIN_PASS_RATE.from_text, default=0.9,
                        help=ranges.EVAL_MIN_PASS_RATE.help("without --baseline: the candidate's share of cases "
                                                            "passing every check needed to promote (default 0.9)"))
    parser.add_argument("--concurrency", type=ranges.EVAL_CONCURRENCY.from_text, default=4,
                        help=ranges.EVAL_CONCURRENCY.help("cases in flight at once (default 4)"))
    parser.add_argument("--case-timeout", type=ranges.EVAL_CASE_TIMEOUT_S.from_text, default=120.0,
                        metavar="SECONDS", help=ranges.EVAL_CASE_TIMEOUT_S.help(
                            "the longest one request of a case may take (default 120)"))
    parser.add_argument("--report-dir", metavar="DIR",
                        help="also write eval-report.md and eval-report.html here")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.quality_gate import verdict as vd
    from tune2serve.components.quality_gate.evalset import read_eval_set
    from tune2serve.components.quality_gate.gate import GateRequest, GateSettings, raise_unless_promoted, run_eval
    from tune2serve.components.quality_gate.judge import load_prompt
    from tune2serve.components.quality_gate.report import write_reports

    eval_set = read_eval_set(args.eval_set)  # size-checked and parsed whole before any request
    prompt = load_prompt(args.judge_prompt)
    settings = GateSettings(vd.Settings(args.margin, args.delta, args.min_pass_rate), args.concurrency,
                            args.case_timeout)
    request = GateRequest(args.candidate, args.baseline, args.project, args.region, args.judge_endpoint,
                          args.judge_model, prompt)
    result = run_eval(request, eval_set, settings)
    if args.report_dir:
        write_reports(result, args.report_dir)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        v = result.verdict
        sys.stdout.write(f"{v.verdict}: {v.rule}\n")
    raise_unless_promoted(result)
    return 0
