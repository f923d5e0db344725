"""The ``tune2serve`` command line: a dispatch table of verbs, and the one place where
errors become exit codes.

Each verb lives in ``tune2serve.cli.commands.<module>`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import only the
standard library at top level, so ``tune2serve --help`` stays fast; the work (and the
heavy imports) happen inside ``run``.

Exit codes (DESIGN.md §4): 0 success · 1 the checkpoint, deployment or promotion is bad
(or a check failed) · 2 usage error (or, for validate, an unreadable SOURCE).
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from tune2serve.components import logs
from tune2serve.components.errors import PromotionError, SourceError, UsageError
from tune2serve.components.checkpoint.secrets import redact

# verb → (module under cli.commands, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "validate": ("validate", "check a checkpoint folder is deployable as Vertex AI custom weights"),
    "export": ("export", "turn a tuning job's output into a deployable folder"),
    "deploy": ("deploy", "deploy an export to a Vertex AI endpoint (custom weights)"),
    "smoke-test": ("smoke_test", "send every request kind and golden prompts to an endpoint"),
    "eval": ("eval", "quality gate: compare a candidate endpoint with the serving one on an eval set"),
    "verify-traffic": ("verify_traffic", "promote a model onto an endpoint through canary steps, or roll back"),
    "local": ("local", "the offline local stack: GCS, Vertex AI and model servers on 127.0.0.1"),
    "compile": ("compile", "compile the pipeline to YAML"),
    "run": ("run", "run the whole promotion pipeline (the local stack by default)"),
    "submit": ("submit", "submit the compiled pipeline as a Vertex AI PipelineJob"),
    "schedule": ("schedule", "create, list, pause, resume or delete a pipeline schedule"),
}

# The one table from error classes to exit codes; the first matching class wins.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (UsageError, 2),
    (PromotionError, 1),
]

# Where the contract gives one verb a different code for a class (validate: an
# unreadable SOURCE is a usage error, exit 2; for export it is bad input, exit 1).
VERB_EXIT_OVERRIDES: dict[str, list[tuple[type[BaseException], int]]] = {
    "validate": [(SourceError, 2)],
}


def exit_code_for(error: BaseException, verb: str | None) -> int:
    for cls, code in VERB_EXIT_OVERRIDES.get(verb or "", []) + EXIT_CODES:
        if isinstance(error, cls):
            return code
    return 1


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; this keeps its message on one line
    and adds the hint to run --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> object:
        """Python 3.11's argparse drops a ``--`` given as an option's value
        (``--bake-s=--``) and stores ``[]`` without calling the option's ``type``; here the
        type sees the ``--`` and refuses it like any other non-number."""
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


def _command_module(verb: str):  # type: ignore[no-untyped-def]
    module, _ = VERBS[verb]
    return importlib.import_module(f"tune2serve.cli.commands.{module}")


def build_parser(verbs: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser. ``verbs`` limits which verbs' modules are imported (the one
    being run), so running one verb never imports the others."""
    parser = _Parser(
        prog="tune2serve",
        description="Promote a fine-tuned LLM checkpoint to a Vertex AI serving endpoint.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb, (_, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        if verbs is None or verb in verbs:
            try:
                _command_module(verb).add_arguments(p)
            except ModuleNotFoundError:
                p.set_defaults(_unavailable=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([verb] if verb in VERBS else [])
    args = parser.parse_args(argv)
    if args.version:
        from tune2serve.components.image import package_version

        print(package_version())
        return 0
    if not args.verb:
        parser.print_help()
        return 2
    if getattr(args, "_unavailable", False):
        sys.stderr.write(f"tune2serve {args.verb}: not available in this build\n")
        return 2
    logs.configure()
    try:
        return int(_command_module(args.verb).run(args))
    except PromotionError as e:
        sys.stderr.write(f"tune2serve {args.verb}: error: {redact(str(e))}\n")
        return exit_code_for(e, args.verb)
    except KeyboardInterrupt:
        sys.stderr.write(f"tune2serve {args.verb}: interrupted\n")
        return 130


def exit_process(code: int) -> NoReturn:
    """Ends the process with ``code`` without the interpreter's teardown.

    With torch loaded (an export that merged, the demo) the teardown — every module's
    objects freed one by one — costs ~0.6 s of a 2-core machine, after the work is done:
    the export's largest fixed cost but torch's import (bench/bench_export.py). Nothing
    is lost by skipping it: each verb closes (and, for exports, fsyncs) what it writes
    before it returns, and the atexit handlers (logging's flush among them) still run.
    While a thread that is not a daemon is alive, the exit is the ordinary one, which
    waits for it."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if others:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)


def entry() -> NoReturn:
    """The ``tune2serve`` console script: ``main`` on the process's arguments, then
    ``exit_process`` (tests call ``main`` itself, which returns)."""
    exit_process(main())


if __name__ == "__main__":
    entry()
