"""``tune2serve smoke-test ENDPOINT --project P --region R [--golden FILE] [--baseline ENDPOINT] [--json]``
(DESIGN.md §4): exit 0 every check passed, 1 a check failed (which, with the request
and the answer, is said on stderr), 2 usage error. ``--json`` adds, beside ``checks``
and ``metrics``, ``signals``: {"candidate": FIGURES, "baseline": FIGURES,
"baseline_endpoint": str, "comparison": {"passed", "failures", "skipped", ...}} (the
last three with --baseline), FIGURES being {"answers", "length_rate", "empty_rate",
"mean_output_tokens", "ttft_p95_ms", "tpot_p50_ms", "ttft_samples", "tpot_samples"}."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint", metavar="ENDPOINT", help="endpoint resource name or id")
    parser.add_argument("--project", required=True, help="Google Cloud project")
    parser.add_argument("--region", required=True, help="Vertex AI region")
    parser.add_argument("--golden", metavar="FILE",
                        help='JSON Lines golden prompts: {"prompt": str} or {"messages": [...]}, with "expect": REGEX')
    parser.add_argument("--baseline", metavar="ENDPOINT",
                        help="an endpoint serving today (resource name or id): the same chat requests go to it, and "
                        "the candidate's LLM signals — answers cut off at max_tokens (finish_reason length), empty "
                        "answers, output tokens, time to first token, time per output token — are reported beside "
                        "its and judged against them (check 'LLM signals vs baseline'; margins: docs/OPERATIONS.md). "
                        "--json: signals.candidate, signals.baseline, signals.comparison")
    parser.add_argument("--report", metavar="FILE",
                        help="also write the Markdown report here, and the HTML report beside it (FILE's name "
                             "with .html)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.smoke_test.report import write_reports
    from tune2serve.components.smoke_test.smoke import raise_if_failed, run_smoke_test
    from tune2serve.components.user_input import read_text_file

    golden = read_text_file(args.golden, "--golden") if args.golden else ""  # size-checked before reading
    result = run_smoke_test(args.endpoint, args.project, args.region, golden, golden_source=args.golden or "golden",
                            baseline=args.baseline or "")
    if args.report:
        markdown_path = Path(args.report)
        html_path = markdown_path.with_suffix(".html")
        write_reports(result, markdown_path, html_path if html_path != markdown_path else Path(f"{markdown_path}.html"))
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        for c in result.checks:
            sys.stdout.write(f"{'pass' if c.passed else 'FAIL'}  {c.name}: {c.detail}\n")
    raise_if_failed(result)
    return 0
