"""``tune2serve run [SOURCE] [...]``: the whole promotion pipeline in one command.

No SOURCE: the demo on the local stack (tiny base model + tuned adapter made here).
With SOURCE: the same pipeline on your tuning output, on the local stack, or on Vertex
AI with --project/--region. Exit 0: promoted or verified and serving (or, for the demo,
its unchanged weights already serve: nothing is done without --again) · 1: a step failed
(its message is printed; the model that served before still serves) · 2: usage error.
One line per phase and step goes to stderr as it starts and ends.
"""

from __future__ import annotations

import argparse
import json
import sys

from tune2serve.components import ranges  # stdlib-only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", default=None, metavar="SOURCE",
                        help="tuning output (local folder, gs://, or projects/P/locations/L/tuningJobs/ID); "
                             "none: run the demo")
    parser.add_argument("--base-model", default="", metavar="SRC", help="base model folder for a LoRA adapter")
    parser.add_argument("--export-dest", default=None, metavar="URI",
                        help="where the export is written (default on the local stack: gs://BUCKET/exports/TIME)")
    parser.add_argument("--production-endpoint", default="", metavar="E",
                        help="serving endpoint to promote onto through canary steps (default: a new endpoint)")
    parser.add_argument("--project", default=None, metavar="P", help="run against Vertex AI in project P")
    parser.add_argument("--region", default=None, metavar="R", help="Vertex AI region (with --project)")
    parser.add_argument("--golden", default=None, metavar="FILE", help="golden prompts, JSON Lines")
    parser.add_argument("--eval-set", default=None, metavar="FILE",
                        help="the quality gate's cases, JSON Lines: with --production-endpoint the candidate is "
                             "compared with the serving model before any traffic moves (docs/OPERATIONS.md 2a)")
    parser.add_argument("--checkpoint", default="final", help="final, best, latest or STEP (default final)")
    parser.add_argument("--machine-type", default="", metavar="T",
                        help="serving machine type, e.g. g2-standard-12 (with the two below; default: "
                             "the one Vertex AI recommends)")
    parser.add_argument("--accelerator-type", default="", metavar="A",
                        help="accelerator type, e.g. NVIDIA_L4 (with --machine-type and --accelerator-count)")
    parser.add_argument("--accelerator-count", type=ranges.ACCELERATOR_COUNT.from_text, default=None, metavar="N",
                        help=ranges.ACCELERATOR_COUNT.help("accelerators per replica (with the two above)"))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--canary-percent", type=ranges.CANARY_PERCENT.from_text, metavar="N",
                       help=ranges.CANARY_PERCENT.help("with --production-endpoint: one canary step at N%%, then "
                                                       "100%% (default 10)"))
    group.add_argument("--steps", type=ranges.STEPS.from_text, default=None, metavar="10,50,100",
                       help=ranges.STEPS.help("canary schedule instead of --canary-percent"))
    parser.add_argument("--strict", action="store_true", help="treat validation warnings as errors")
    parser.add_argument("--home", default=None, metavar="DIR", help="local stack home (default .tune2serve)")
    parser.add_argument("--verbose", action="store_true", help="stream every step's output to stderr")
    parser.add_argument("--again", action="store_true",
                        help="the demo: promote its weights even when they already serve (a second run on "
                             "unchanged weights otherwise says so and changes nothing)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the outcome on stdout")


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.errors import PromotionError
    from tune2serve.pipelines.main_job import JobOptions, run_job, summary_text

    opts = JobOptions(
        source=args.source, base_model=args.base_model, export_dest=args.export_dest,
        production_endpoint=args.production_endpoint, project=args.project, region=args.region,
        golden_file=args.golden, eval_set_file=args.eval_set, checkpoint=args.checkpoint, machine_type=args.machine_type,
        accelerator_type=args.accelerator_type, accelerator_count=args.accelerator_count or 0,
        canary_percent=ranges.DEFAULT_CANARY_PERCENT if args.canary_percent is None else args.canary_percent,
        steps=args.steps or "", strict=args.strict, home=args.home,
        verbose=args.verbose, again=args.again,
    )
    # one line per step as it starts and ends, on stderr (stdout keeps --json's one object)
    result = run_job(opts, echo=sys.stderr if args.verbose else None, progress=sys.stderr)
    if args.json:  # stdout holds the one JSON object; the summary goes to stderr
        print(json.dumps(result.to_json(), sort_keys=True))
        sys.stderr.write(summary_text(result) + "\n")
    else:
        print(summary_text(result))
    if not result.ok:
        raise PromotionError(f"step {result.failed_step} failed: {result.message}")
    return 0
