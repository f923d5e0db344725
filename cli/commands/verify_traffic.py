"""`tune2serve verify-traffic ENDPOINT --project P --region R [--model MODEL]
[--canary-percent N | --steps 10,50,100] [--json]` (DESIGN.md §4).

Without --model: check ENDPOINT serves 100 % on healthy replicas and answers. With
--model: promote that Model onto ENDPOINT through the canary steps, or roll back.
With --rollback: roll back the promotion in progress on ENDPOINT (idempotent).
Exit 0 promoted or verified · 1 rolled back or failed (the model that served before
still serves) · 2 usage error. Stdlib-only imports at top level.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tune2serve.components import ranges  # stdlib-only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint", metavar="ENDPOINT", help="endpoint resource name or id")
    parser.add_argument("--project", default=os.environ.get("TUNE2SERVE_PROJECT"), help="Vertex AI project")
    parser.add_argument("--region", default=os.environ.get("TUNE2SERVE_REGION"), help="Vertex AI region")
    parser.add_argument("--model", help="Model resource name to promote onto ENDPOINT (as deploy prints it)")
    group = parser.add_mutually_exclusive_group()
    # default None, not 10: argparse tells a flag given from one absent by the value differing
    # from its default, so "--canary-percent 10 --steps ..." would slip past the exclusion
    group.add_argument("--canary-percent", type=ranges.CANARY_PERCENT.from_text, metavar="N",
                       help=ranges.CANARY_PERCENT.help("one canary step at N%%, then 100%% (default 10)"))
    group.add_argument("--steps", type=ranges.STEPS.from_text, metavar="10,50,100",
                       help=ranges.STEPS.help("canary schedule instead of --canary-percent"))
    parser.add_argument("--significance", type=ranges.SIGNIFICANCE.from_text, default=0.01,
                        help=ranges.SIGNIFICANCE.help("significance of the binomial routing test (default 0.01)"))
    parser.add_argument("--keep-previous", type=ranges.KEEP_PREVIOUS_S.from_text, default=0.0, metavar="SECONDS",
                        help=ranges.KEEP_PREVIOUS_S.help("keep the previous model deployed at 0%% this long before "
                                                         "undeploying it (default 0)"))
    parser.add_argument("--staging-endpoint", help="the endpoint deploy made for --model (machine spec is copied "
                        "from it; it is undeployed and deleted after a successful promotion)")
    parser.add_argument("--bake-s", type=ranges.BAKE_S.from_text, default=0.0, metavar="SECONDS",
                        help=ranges.BAKE_S.help(
                            "after the probe passes at each canary step below 100%%, hold the split this long and "
                            "judge the canary by the endpoint's real traffic in Cloud Monitoring (default 0: no "
                            "bake; in the cloud use 600 or more: points cover 60 s and arrive minutes late)"))
    parser.add_argument("--max-error-rate-delta", type=ranges.MAX_ERROR_RATE_DELTA.from_text, default=0.01,
                        help=ranges.MAX_ERROR_RATE_DELTA.help(
                            "bake: roll back when the canary's error rate exceeds the serving model's by more "
                            "than this (absolute; default 0.01)"))
    parser.add_argument("--max-latency-ratio", type=ranges.MAX_LATENCY_RATIO.from_text, default=1.5,
                        help=ranges.MAX_LATENCY_RATIO.help(
                            "bake: roll back when the canary's p95 latency exceeds this times the serving model's "
                            "(default 1.5)"))
    parser.add_argument("--min-bake-requests", type=ranges.MIN_BAKE_REQUESTS.from_text, default=20,
                        help=ranges.MIN_BAKE_REQUESTS.help(
                            "bake: fewer canary requests than this is inconclusive (default 20)"))
    parser.add_argument("--hold-inconclusive", action="store_true",
                        help="bake: leave an inconclusive canary at its step (exit 1, outcome failed) instead of "
                        "rolling it back; finish with --rollback")
    signals = parser.add_argument_group(
        "LLM signals", "each canary step compares, per deployed model, what the probe requests' streamed answers say "
        "(defaults and rule: docs/OPERATIONS.md, 'Canary signals')")
    signals.add_argument("--probe-max-tokens", type=ranges.PROBE_MAX_TOKENS.from_text, default=32, metavar="N",
                         help=ranges.PROBE_MAX_TOKENS.help("max_tokens of each probe request (default 32)"))
    signals.add_argument("--max-length-rate-delta", type=ranges.MAX_LENGTH_RATE_DELTA.from_text, default=0.25,
                         metavar="D", help=ranges.MAX_LENGTH_RATE_DELTA.help(
                             "roll back when the canary's rate of answers cut off at max_tokens (finish_reason "
                             "length) exceeds the serving model's by more than this (default 0.25)"))
    signals.add_argument("--max-empty-rate-delta", type=ranges.MAX_EMPTY_RATE_DELTA.from_text, default=0.20,
                         metavar="D", help=ranges.MAX_EMPTY_RATE_DELTA.help(
                             "roll back when the canary's rate of empty answers exceeds the serving model's by more "
                             "than this (default 0.20)"))
    signals.add_argument("--max-output-length-ratio", type=ranges.MAX_OUTPUT_LENGTH_RATIO.from_text, default=2.0,
                         metavar="R", help=ranges.MAX_OUTPUT_LENGTH_RATIO.help(
                             "roll back when the canary's mean output length leaves 1/R..R times the serving "
                             "model's, give or take 4 tokens (default 2)"))
    signals.add_argument("--max-ttft-ratio", type=ranges.MAX_TTFT_RATIO.from_text, default=3.0, metavar="R",
                         help=ranges.MAX_TTFT_RATIO.help("roll back when the canary's time-to-first-token p95 "
                                                         "exceeds R times the serving model's + 250 ms (default 3)"))
    signals.add_argument("--max-tpot-ratio", type=ranges.MAX_TPOT_RATIO.from_text, default=3.0, metavar="R",
                         help=ranges.MAX_TPOT_RATIO.help("roll back when the canary's time-per-output-token p50 "
                                                         "exceeds R times the serving model's + 50 ms (default 3)"))
    signals.add_argument("--max-length-rate", type=ranges.MAX_LENGTH_RATE.from_text, metavar="RATE",
                         help=ranges.MAX_LENGTH_RATE.help("with no serving model to compare with (standalone, a "
                                                          "first promotion): fail above this cut-off rate "
                                                          "(default: reported, not judged)"))
    signals.add_argument("--max-empty-rate", type=ranges.MAX_EMPTY_RATE.from_text, metavar="RATE",
                         help=ranges.MAX_EMPTY_RATE.help("with no serving model to compare with: fail above this "
                                                         "empty-answer rate (default: reported, not judged)"))
    parser.add_argument("--quality-verdict", choices=("promote", "hold", "reject"), metavar="VERDICT",
                        help="the quality gate's verdict for --model (what `tune2serve eval` decided): promote, hold "
                        "or reject; after hold or reject nothing is promoted (exit 1) unless --force-promote")
    parser.add_argument("--force-promote", metavar="REASON",
                        help="promote despite the quality gate's hold or reject, for REASON: an audited override — "
                        "the reason, the verdict overridden and who ran it (your credentials' account) are logged, "
                        "put in --json's evidence.override, the reports and the endpoint's labels; the canary's own "
                        "checks still roll a failing model back")
    parser.add_argument("--run-id", default="cli", help="run id recorded on the endpoint (the pipeline's)")
    parser.add_argument("--rollback", action="store_true", help="roll back the promotion in progress on ENDPOINT")
    parser.add_argument("--report-dir", help="write verify_traffic.md and verify_traffic.html here")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.errors import PromotionAbortedError, UsageError

    if not args.project or not args.region:
        raise UsageError("--project and --region are required (or TUNE2SERVE_PROJECT / TUNE2SERVE_REGION)")
    if args.rollback:
        return _rollback(args)
    from tune2serve.components.verify_traffic.bake import BakePolicy
    from tune2serve.components.verify_traffic.verify import verify_traffic

    bake = BakePolicy(args.bake_s, args.max_error_rate_delta, args.max_latency_ratio, args.min_bake_requests,
                      "hold" if args.hold_inconclusive else "rollback")
    if args.bake_s and not args.model:
        raise UsageError("--bake-s bakes a canary: it needs --model (the Model to promote onto ENDPOINT)")
    staging = (args.staging_endpoint or "") if args.model else args.endpoint
    result = verify_traffic(project=args.project, region=args.region, endpoint=staging,
                            model=args.model, production_endpoint=args.endpoint if args.model else None,
                            steps=args.steps, canary_percent=args.canary_percent,
                            significance=args.significance,
                            keep_previous_s=args.keep_previous, run_id=args.run_id, bake=bake,
                            policy=_policy(args), quality_verdict=args.quality_verdict or "",
                            force_promote=args.force_promote or "")
    if args.report_dir:
        from pathlib import Path

        from tune2serve.components.verify_traffic.report import write_reports

        Path(args.report_dir).mkdir(parents=True, exist_ok=True)
        write_reports(result, Path(args.report_dir) / "verify_traffic.md", Path(args.report_dir) / "verify_traffic.html")
    if args.json:
        print(json.dumps(result.as_json(), default=str))
    else:
        sys.stderr.write(f"{result.outcome}: {args.endpoint} serves {result.traffic_split}\n")
    if not result.ok:
        raise PromotionAbortedError(f"{args.endpoint}: {result.outcome}: {result.reason or 'see the evidence'}; "
                                    f"serving {result.traffic_split}")
    return 0


def _policy(args: argparse.Namespace) -> Any:
    """The step policy with the LLM-signal flags (the rest at their defaults)."""
    from tune2serve.components.verify_traffic.checks import Policy
    from tune2serve.components.verify_traffic.signals import SignalPolicy

    signals = SignalPolicy(max_length_rate_delta=args.max_length_rate_delta,
                           max_empty_rate_delta=args.max_empty_rate_delta,
                           max_output_length_ratio=args.max_output_length_ratio, max_ttft_ratio=args.max_ttft_ratio,
                           max_tpot_ratio=args.max_tpot_ratio, max_length_rate=args.max_length_rate,
                           max_empty_rate=args.max_empty_rate)
    return Policy(significance=args.significance, signals=signals, max_tokens=args.probe_max_tokens)


def _rollback(args: argparse.Namespace) -> int:
    from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
    from tune2serve.components.verify_traffic.rollback import rollback_endpoint
    from tune2serve.components.vertex.clients import target
    from tune2serve.components.vertex.resources import endpoint_name

    name = str(endpoint_name(args.endpoint, args.project, args.region))
    result = rollback_endpoint(EndpointApi(target(args.project, args.region)), name,
                               run_id=None if args.run_id == "cli" else args.run_id)
    outcome = {"rolled_back": "rolled_back", "left_alone": "failed"}.get(result.action, "verified")
    if args.json:
        print(json.dumps({"outcome": outcome, "traffic_split": result.restored_split,
                          "evidence": {"rollback": result.as_dict()}}))
    if result.action == "left_alone":  # someone else changed the split: theirs stands, nothing was rolled back
        from tune2serve.components.errors import PromotionAbortedError

        raise PromotionAbortedError(f"{name}: not rolled back: " + "; ".join(result.notes))
    return 0
