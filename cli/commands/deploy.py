"""``tune2serve deploy SOURCE --project P --region R [...]`` (DESIGN.md §4).

Thin: parses flags into a ``DeploySpec`` and calls ``components.deploy.deploy``.
"""

from __future__ import annotations

import argparse
import json
import sys

from tune2serve.components import ranges  # stdlib-only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="the folder to deploy: gs://BUCKET/PREFIX written by 'tune2serve export', or any "
                             "Hugging Face model folder uploaded there that validates")
    parser.add_argument("--project", required=True, help="Google Cloud project")
    parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")
    spec = parser.add_argument_group("machine spec (all three, or none to use Vertex AI's recommendation)")
    spec.add_argument("--machine-type", help="e.g. g2-standard-12")
    spec.add_argument("--accelerator-type", help="e.g. NVIDIA_L4")
    spec.add_argument("--accelerator-count", type=ranges.ACCELERATOR_COUNT.from_text, metavar="N",
                      help=ranges.ACCELERATOR_COUNT.help("accelerators per replica"))
    parser.add_argument("--min-replica-count", type=ranges.MIN_REPLICA_COUNT.from_text, default=1, metavar="N",
                        help=ranges.MIN_REPLICA_COUNT.help("fewest serving replicas (default 1)"))
    parser.add_argument("--max-replica-count", type=ranges.MAX_REPLICA_COUNT.from_text, default=None, metavar="N",
                        help=ranges.MAX_REPLICA_COUNT.help("most serving replicas (default: the min replica count)"))
    parser.add_argument("--endpoint-display-name", help="default: tune2serve-<identity digest>")
    parser.add_argument("--model-display-name", help="default: tune2serve-<identity digest>")
    parser.add_argument("--enable-private-service-connect", action="store_true",
                        help="a private (PSC) endpoint instead of a public dedicated one")
    parser.add_argument("--psc-project-allowlist", default="", help="comma-separated projects allowed to connect")
    parser.add_argument("--reservation-affinity", help="NO_RESERVATION, ANY_RESERVATION, SPECIFIC_RESERVATION, ...")
    parser.add_argument("--reservation-key", help="e.g. compute.googleapis.com/reservation-name")
    parser.add_argument("--reservation-values", default="", help="comma-separated reservation resource names")
    parser.add_argument("--deploy-timeout", type=ranges.DEPLOY_TIMEOUT_S.from_text, default=7200.0, metavar="SECONDS",
                        help=ranges.DEPLOY_TIMEOUT_S.help("give up waiting on the deploy operation after this long "
                                                          "(default 7200)"))
    parser.add_argument("--run-id", help="labels the resources with tune2serve-run=<id> (clean-up finds them by it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _split(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.deploy.deploy import deploy_export
    from tune2serve.components.deploy.request import DeploySpec, check_replicas, reservation_from_flags
    from tune2serve.components.errors import UsageError
    from tune2serve.components.vertex.machine_spec import parse_machine_spec

    max_replicas = args.max_replica_count if args.max_replica_count is not None else args.min_replica_count
    check_replicas(args.min_replica_count, max_replicas)
    if args.psc_project_allowlist and not args.enable_private_service_connect:
        raise UsageError("--psc-project-allowlist needs --enable-private-service-connect")
    spec = DeploySpec(
        export_uri=args.source, project=args.project, region=args.region,
        machine=parse_machine_spec(args.machine_type, args.accelerator_type, args.accelerator_count),
        min_replica_count=args.min_replica_count, max_replica_count=max_replicas,
        endpoint_display_name=args.endpoint_display_name, model_display_name=args.model_display_name,
        enable_private_service_connect=args.enable_private_service_connect,
        psc_project_allowlist=_split(args.psc_project_allowlist),
        reservation=reservation_from_flags(args.reservation_affinity, args.reservation_key,
                                           _split(args.reservation_values)),
        deploy_timeout_s=args.deploy_timeout, run_id=args.run_id,
    )
    result = deploy_export(spec)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        verb = "reused" if result.reused else "deployed"
        sys.stdout.write(f"{verb}: {result.endpoint}\nmodel: {result.model}\ndeployed model id: "
                         f"{result.deployed_model_id}\ndedicated DNS: {result.dedicated_endpoint_dns}\n")
    return 0
