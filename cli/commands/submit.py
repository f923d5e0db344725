"""``tune2serve submit``: run the compiled pipeline on Vertex AI Pipelines.

    tune2serve submit --project P --region R --pipeline-root gs://B/root
                      [--param NAME=VALUE ...] [--params-file FILE] [--template PATH]
                      [--service-account SA] [--network NET | --network-attachment NA]
                      [--label K=V ...] [--display-name N] [--job-id ID] [--no-cache]
                      [--wait [--timeout S]] [--json]

exit 0: submitted (with --wait: the run succeeded) · 1: the run failed or Vertex AI
refused it · 2: usage error (nothing submitted).
--json: {"ok", "pipeline_job", "job_id", "state", "console_url", "parameters", "error"}
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tune2serve.components import ranges  # stdlib-only


def add_run_arguments(parser: argparse.ArgumentParser, *, display_name: bool = True) -> None:
    """The flags shared by ``submit`` and ``schedule create``: what a run is made from.
    (``schedule create`` has its own required ``--display-name``, used for its runs too.)"""
    parser.add_argument("--project", required=True, help="Google Cloud project id")
    parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")
    parser.add_argument("--pipeline-root", required=True, metavar="GS_URI",
                        help="gs://BUCKET/PREFIX where the run's artifacts go")
    parser.add_argument("--template", default="compiled/promote_checkpoint.yaml", metavar="PATH",
                        help="compiled pipeline (default: %(default)s)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a pipeline parameter; repeat; overrides --params-file")
    parser.add_argument("--params-file", metavar="FILE", help="YAML or JSON mapping of parameter names to values")
    parser.add_argument("--service-account", metavar="EMAIL", help="service account the run acts as")
    parser.add_argument("--network", metavar="NETWORK", help="VPC to peer: projects/NUMBER/global/networks/NAME")
    parser.add_argument("--network-attachment", metavar="ATTACHMENT",
                        help="PSC interface: projects/P/regions/R/networkAttachments/NAME")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a run label; repeat")
    if display_name:
        parser.add_argument("--display-name", help="run display name (default: the pipeline's name)")
    parser.add_argument("--no-cache", action="store_true", help="run every step even if cached")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def submission_from_args(args: argparse.Namespace, job_id: str | None = None) -> Any:
    from tune2serve.components.errors import UsageError
    from tune2serve.pipelines import submit

    if args.network and args.network_attachment:
        raise UsageError("--network and --network-attachment are alternatives; give one")
    return submit.prepare(
        project=args.project, region=args.region, template_path=args.template,
        pipeline_root=args.pipeline_root, params=submit.parse_assignments(args.param, "--param"),
        params_file=args.params_file, labels=submit.parse_labels(args.label),
        display_name=args.display_name, job_id=job_id, service_account=args.service_account,
        network=args.network, network_attachment=args.network_attachment,
        enable_caching=False if args.no_cache else None,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--job-id", help="the run's id (lowercase, digits, '-'); default: name + time")
    parser.add_argument("--wait", action="store_true",
                        help="wait for the run to end, printing the run's and each task's state changes, then "
                             "where the reports are")
    parser.add_argument("--timeout", type=ranges.SUBMIT_TIMEOUT_S.from_text, default=24 * 3600.0, metavar="S",
                        help=ranges.SUBMIT_TIMEOUT_S.help("--wait gives up after S seconds (default 86400)"))
    parser.add_argument("--poll", type=ranges.POLL_S.from_text, default=10.0, metavar="S", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.errors import VertexError
    from tune2serve.components.vertex import pipeline_jobs
    from tune2serve.components.vertex.retry import PollPolicy
    from tune2serve.pipelines import submit

    submission = submission_from_args(args, job_id=args.job_id)
    status = submit.submit(submission)
    if not args.json:
        print(f"submitted {status.resource_name}\n{status.console_url}", flush=True)
    if args.wait:
        shown: list[pipeline_jobs.RunStatus] = []

        def show(change: pipeline_jobs.RunStatus) -> None:
            """The run's state and each task's, once per change (the log line is DEBUG then)."""
            for line in pipeline_jobs.changes(shown[-1] if shown else None, change):
                sys.stderr.write(line + "\n")
            shown.append(change)

        try:
            status = pipeline_jobs.wait_for_run(submission.vertex, status.resource_name, on_change=show,
                                                poll=PollPolicy.every(args.poll), timeout_s=args.timeout)
        except VertexError:
            if args.json:
                print(json.dumps(_result(status, submission, ok=False)))
            raise
    ok = status.state == "PIPELINE_STATE_SUCCEEDED" if args.wait else True
    if args.json:
        print(json.dumps(_result(status, submission, ok=ok)))
    elif args.wait:
        print(f"{status.state}" + (f": {status.error}" if status.error else ""))
        print("\n".join(_where_to_look(status)))
    return 0 if ok else 1


def _where_to_look(status: Any) -> list[str]:
    """Where a finished run's reports are: the report artifacts its tasks list, and the
    run's page in the console (the graph, every task's logs and artifacts)."""
    reports = status.reports()
    lines = ["reports:", *(f"  {uri}" for uri in reports)] if reports else []
    return [*lines, f"the run in the console: {status.console_url}"]


def _result(status: Any, submission: Any, *, ok: bool) -> dict[str, Any]:
    return {
        "ok": ok,
        "pipeline_job": status.resource_name,
        "job_id": status.resource_name.rsplit("/", 1)[-1],
        "state": status.state,
        "console_url": status.console_url,
        "parameters": submission.run_spec.parameter_values,
        "error": status.error,
    }
