"""``tune2serve validate SOURCE``: is a checkpoint folder deployable? (DESIGN.md §4)

Exit 0 deployable · 1 at least one error finding · 2 usage error or SOURCE unreadable
(the CLI's exit-code table maps the raised errors). Top-level imports: stdlib only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tune2serve.components import ranges  # stdlib-only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="a local folder or gs://bucket/prefix")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--strict", action="store_true", help="treat every warning as an error")
    parser.add_argument("--machine-type", default=None, help="e.g. g2-standard-12 (set with the two below)")
    parser.add_argument("--accelerator-type", default=None, help="e.g. NVIDIA_L4")
    parser.add_argument("--accelerator-count", type=ranges.ACCELERATOR_COUNT.from_text, default=None, metavar="N",
                        help=ranges.ACCELERATOR_COUNT.help("accelerators per replica"))
    parser.add_argument("--verify-checksums", action="store_true",
                        help="hash every file against manifest.json (reads all the data)")
    parser.add_argument("--scan-values", action="store_true",
                        help="stream every float tensor and check it holds no NaN/Inf (reads all the data)")
    parser.add_argument("--base-model", default=None, metavar="SRC",
                        help="compare tensor names and shapes with this base model folder")
    parser.add_argument("--target-vllm", default=None, metavar="VERSION",
                        help="the vLLM release that will serve the folder (components/validate/engines.json); "
                             "default: the one the local stack runs, which the verdict is proven against")
    parser.add_argument("--report-dir", default=None, metavar="DIR",
                        help="also write report.md and report.html into DIR")


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.validate import ValidateOptions, parse_machine_spec, validate_checkpoint
    from tune2serve.components.validate.report import render_text, write_reports

    spec = parse_machine_spec(args.machine_type, args.accelerator_type, args.accelerator_count)
    options = ValidateOptions(strict=args.strict, machine_spec=spec, verify_checksums=args.verify_checksums,
                              base_model=args.base_model, scan_values=args.scan_values, target_vllm=args.target_vllm)
    report = validate_checkpoint(args.source, options)
    if args.report_dir:
        paths = write_reports(report, Path(args.report_dir))
        sys.stderr.write("reports: " + ", ".join(str(p) for p in paths) + "\n")
    sys.stdout.write(report.to_json() + "\n" if args.json else render_text(report))
    return 0 if report.ok else 1
