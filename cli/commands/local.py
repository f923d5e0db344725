"""``tune2serve local up | down | status | env | run | shell | fault | tick``: the offline local stack.

Top-level imports are stdlib only; the stack is imported inside ``run``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

from tune2serve.components import ranges  # stdlib-only
from tune2serve.localstack.faults import KIND_HELP  # stdlib-only module
from tune2serve.localstack.state import ENGINES  # stdlib-only module

FAULT_KINDS = tuple(KIND_HELP)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (("up", "start the stack (idempotent) and wait until it answers"),
                            ("down", "stop every process of the stack, model servers included"),
                            ("status", "endpoints, deployed models, traffic splits, replica health"),
                            ("env", "print `export NAME=VALUE` lines pointing clients at the stack")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        _home(p)
        if name in ("up", "status"):
            p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        if name == "up":
            p.add_argument("--engine", choices=ENGINES, metavar="ENGINE",
                           help="the model server of every replica started from now on, kept by the stack: vllm "
                           "(vLLM's OpenAI server, the engine behind custom-weights endpoints, from .venv-vllm/ or "
                           "$TUNE2SERVE_VLLM_PYTHON; the default for a new stack) or transformers (`transformers "
                           "serve`, the quick engine for the inner loop); default: the stack's current engine")
    kinds = "\n".join(textwrap.fill(text, 96, initial_indent=f"  {kind:<15} ", subsequent_indent=" " * 18)
                      for kind, text in KIND_HELP.items())
    p = sub.add_parser("fault", help="inject a fault into the running stack",
                       description="inject a fault into the running stack (off by default)",
                       epilog=f"kinds:\n{kinds}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=FAULT_KINDS, metavar="KIND", help=" | ".join(FAULT_KINDS))
    _home(p)
    p.add_argument("--target", help="a deployed model id or a Model resource name (default: every deployed model); "
                   "control-429: a part of the API call's 'METHOD PATH', e.g. :deploy")
    p.add_argument("--count", type=ranges.FAULT_COUNT.from_text, metavar="N",
                   help=ranges.FAULT_COUNT.help("how many requests or operations the fault applies to"))
    p.add_argument("--ms", type=ranges.FAULT_MS.from_text, metavar="N",
                   help=ranges.FAULT_MS.help("latency: milliseconds added to each answer"))
    p.add_argument("--percent", type=ranges.FAULT_PERCENT.from_text, metavar="N",
                   help=ranges.FAULT_PERCENT.help("routing-skew: the share of requests sent to the target"))
    p.add_argument("--match", metavar="REGEX", help="http-503/http-429: fail only the requests whose body matches "
                   "REGEX (re syntax, searched in the UTF-8 body under a time limit)")
    p = sub.add_parser("tick", help="start the stack's due pipeline schedules now",
                       description="start the local stack's due pipeline schedules now, as Vertex AI's scheduler "
                       "would at their cron times (nothing fires by itself on the local stack); prints the "
                       "pipeline jobs started")
    _home(p)
    p.add_argument("--force", action="store_true", help="start every ACTIVE schedule, due or not")
    p.add_argument("--json", action="store_true", help='one JSON object on stdout: {"started": [names]}')
    what = ("with every Google client already pointed at the running stack: the variables `local env` prints, "
            "plus a sitecustomize.py on PYTHONPATH that sets up the Vertex SDK (api_endpoint, REST, anonymous "
            "credentials) and Resource Manager's client when they are imported, and offline Application Default "
            "Credentials; exits with the command's status")
    p = sub.add_parser("run", help="run a command pointed at the stack (Google's SDK samples unchanged)",
                       description=f"run CMD {what}", usage="tune2serve local run [--home DIR] -- CMD [ARG ...]")
    _home(p)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments, after --")
    p = sub.add_parser("shell", help="an interactive $SHELL pointed at the stack, as `local run` points a command",
                       description=f"start $SHELL {what}")
    _home(p)


def _home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="the stack's state directory (default: $TUNE2SERVE_HOME or ./.tune2serve)")


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.errors import UsageError
    from tune2serve.localstack.hints import local_command
    from tune2serve.localstack.stack import LocalStack, StackError, resolve_home

    stack = LocalStack(resolve_home(args.home))
    try:
        if args.action == "up":
            result = stack.up(engine=args.engine)
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                what = ", ".join(result["started"]) or "nothing (already running)"
                print(f"local stack in {stack.home}: started {what}")
                print(f"engine: {result['engine']}")
                print(f"bucket: gs://{result['bucket']}")
                print(_exports(result["env"]))
            return 0
        if args.action == "down":
            pids = stack.down()
            print(f"local stack in {stack.home}: stopped {len(pids)} process(es)")
            return 0
        if args.action == "env":
            print(_exports(stack.env()))
            return 0
        if args.action == "status":
            status = stack.status()
            print(json.dumps(status, indent=2) if args.json else _status_text(status))
            return 0
        if args.action == "tick":
            if not stack.status()["running"]["vertex"]:
                raise UsageError(f"no running local stack in {stack.home}: "
                                 f"run `{local_command('up', stack.home)}` first")
            from tune2serve.localstack.admin import tick_schedules

            started = tick_schedules(stack.api_endpoint, force=args.force)
            print(json.dumps({"started": started}) if args.json else
                  "\n".join(started) or "no schedule was due (--force starts every ACTIVE one)")
            return 0
        if args.action in ("run", "shell"):
            return _run_pointed(stack, args)
        from tune2serve.localstack.faults import Fault, inject_fault

        problem = Fault(args.kind, args.target, args.count, args.ms, args.percent, args.match).problem()
        if problem:
            raise UsageError(f"tune2serve local fault {args.kind}: {problem}")
        if not stack.status()["running"]["vertex"]:
            raise UsageError(f"no running local stack in {stack.home}: "
                             f"run `{local_command('up', stack.home)}` first")
        answer = inject_fault(stack.api_endpoint, args.kind, args.target, args.count, args.ms, args.percent,
                              match=args.match)
        print(json.dumps(answer))
        return 0
    except (StackError, RuntimeError) as e:
        sys.stderr.write(f"tune2serve local {args.action}: error: {e}\n")
        return 1


def _run_pointed(stack: Any, args: argparse.Namespace) -> int:
    """``local run -- CMD`` / ``local shell`` (localstack/sdk_env.py): CMD's exit status."""
    import os

    from tune2serve.components.errors import UsageError
    from tune2serve.localstack.sdk_env import run_command, sdk_environment

    command = list(getattr(args, "command", None) or [])
    command = command[1:] if command[:1] == ["--"] else command
    if args.action == "shell":
        command = [os.environ.get("SHELL") or "/bin/sh"]
    elif not command:
        raise UsageError("tune2serve local run: give the command to run after --, e.g. "
                         "`tune2serve local run -- python my_script.py`")
    if not stack.status()["running"]["vertex"]:
        raise UsageError(f"no running local stack in {stack.home}: run `tune2serve local up --home {stack.home}` first")
    env = sdk_environment(stack, dict(os.environ))
    if args.action == "shell":
        sys.stderr.write(f"a shell pointed at the local stack in {stack.home} (Vertex AI at "
                         f"{env['TUNE2SERVE_VERTEX_API_ENDPOINT']}); `exit` leaves it\n")
    return run_command(command, env)


def _exports(env: dict[str, str]) -> str:
    import shlex

    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())


def _status_text(status: dict) -> str:  # type: ignore[type-arg]
    lines = [f"home: {status['home']}"]
    lines += [f"{name}: {'running' if up else 'stopped'}" for name, up in status["running"].items()]
    engine = status.get("engine")
    if engine:
        lines.append(f"engine: {engine['name']} {engine.get('version') or '(' + engine.get('error', '?') + ')'}")
    for e in status.get("endpoints", []):
        lines.append(f"endpoint {e['name']} ({e.get('displayName', '')}) dns={e.get('dedicatedEndpointDns')}")
        lines.append(f"  traffic split: {e.get('trafficSplit', {})}")
        for dm in e.get("deployedModels", []):
            avail = dm.get("status", {}).get("availableReplicaCount", 0)
            engines = ", ".join(sorted({r["engine"] for r in dm.get("replicas", []) if r.get("engine")}))
            lines.append(f"  deployed model {dm['id']} model={dm['model']} "
                         f"replicas {avail}/{dm.get('wantedReplicas', '?')} healthy"
                         + (f" on {engines}" if engines else ""))
    for f in status.get("faults", []):
        lines.append(f"fault: {f}")
    if "error" in status:
        lines.append(f"error: {status['error']}")
    return "\n".join(lines)
