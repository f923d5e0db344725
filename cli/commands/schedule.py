"""``tune2serve schedule``: cron schedules of the promotion pipeline on Vertex AI.

    tune2serve schedule create --cron "0 3 * * *" --display-name NAME
                               --project P --region R --pipeline-root gs://B/root
                               [--source-prefix gs://B/tuning-runs]
                               [any submit flag: --param, --params-file, --template, ...]
                               [--max-concurrent-runs 1] [--max-runs N] [--start-time T] [--end-time T]
    tune2serve schedule list   --project P --region R [--display-name NAME]
    tune2serve schedule pause | resume | delete SCHEDULE --project P --region R
                                (SCHEDULE: an id or projects/P/locations/R/schedules/ID)
    every action: [--json] → one JSON object on stdout

``--source-prefix`` makes each scheduled run promote the newest completed tuning output
under the prefix, or end as a no-op when there is none or it was promoted already (the
pipeline parameter ``source`` becomes ``newest:PREFIX``; see pipelines/schedule.py).
exit 0: done · 1: Vertex AI refused · 2: usage error (a cron that does not parse, ...).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tune2serve.components import ranges  # stdlib-only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tune2serve.cli.commands.submit import add_run_arguments

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a cron schedule of the pipeline")
    create.add_argument("--cron", required=True, help='unix cron, e.g. "0 3 * * *"; prefix "CRON_TZ=Area/City " for a time zone')
    create.add_argument("--display-name", required=True, help="the schedule's name (and its runs')")
    add_run_arguments(create, display_name=False)
    create.add_argument("--source-prefix", metavar="GS_URI",
                        help="promote the newest completed tuning output under this prefix at each run")
    create.add_argument("--max-concurrent-runs", type=ranges.MAX_CONCURRENT_RUNS.from_text, default=1, metavar="N",
                        help=ranges.MAX_CONCURRENT_RUNS.help("runs of this schedule at once (default 1)"))
    create.add_argument("--max-runs", type=ranges.MAX_RUNS.from_text, metavar="N",
                        help=ranges.MAX_RUNS.help("complete the schedule after N runs"))
    create.add_argument("--start-time", metavar="RFC3339", help="no run before this time")
    create.add_argument("--end-time", metavar="RFC3339", help="no run after this time")

    listing = actions.add_parser("list", help="list the schedules in a project and region")
    _where(listing)
    listing.add_argument("--display-name", help="only schedules with this name")
    listing.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    for action, help_text in (("pause", "stop a schedule from starting runs"),
                              ("resume", "let a paused schedule start runs again"),
                              ("delete", "delete a schedule (its past runs stay)")):
        one = actions.add_parser(action, help=help_text)
        one.add_argument("schedule", metavar="SCHEDULE", help="schedule id or resource name")
        _where(one)
        one.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _where(parser: argparse.ArgumentParser) -> None:
    """--project and --region, with the help ``submit`` gives them."""
    parser.add_argument("--project", required=True, help="Google Cloud project id")
    parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.vertex import pipeline_jobs
    from tune2serve.components.vertex.clients import target

    if args.action == "create":
        result: Any = _create(args)
    elif args.action == "list":
        result = {"schedules": pipeline_jobs.list_schedules(target(args.project, args.region), args.display_name)}
    else:
        result = pipeline_jobs.change_schedule(target(args.project, args.region), args.schedule, args.action)
    if args.json:
        print(json.dumps(result))
    elif args.action == "list":
        for s in result["schedules"]:
            print(f"{s['name']}  {s['state']:<9} {s['cron']!r:<20} next {s['next_run_time']}  {s['display_name']}")
    else:
        print(f"{result['name']}: {result['state']}" + (f"\n{result['console_url']}" if "console_url" in result else ""))
    return 0


def _create(args: argparse.Namespace) -> dict[str, Any]:
    from tune2serve.components.errors import UsageError
    from tune2serve.components.discover.discover import NEWEST_PREFIX
    from tune2serve.pipelines import schedule
    from tune2serve.cli.commands.submit import submission_from_args

    schedule.parse_cron(args.cron)  # before anything else: the commonest mistake
    if args.source_prefix:
        if not args.source_prefix.startswith("gs://"):
            raise UsageError(f"--source-prefix {args.source_prefix!r}: give gs://BUCKET/PREFIX")
        args.param = [*args.param, f"source={NEWEST_PREFIX}{args.source_prefix.rstrip('/')}"]
    submission = submission_from_args(args)
    return schedule.create_schedule(
        submission, cron=args.cron, display_name=args.display_name,
        max_concurrent_run_count=args.max_concurrent_runs, max_run_count=args.max_runs,
        start_time=args.start_time, end_time=args.end_time,
    )
