"""``tune2serve run`` (interim): a local demonstration of the validate gate.

Builds a good tiny model and two broken copies under ``./.tune2serve/demo``, validates
each, prints the verdicts and writes Markdown + HTML reports to
``./.tune2serve/demo/reports/``. Exit 0 when the good model passes and both broken ones
fail with their expected finding. (The full local promotion replaces this later.)
Top-level imports: stdlib only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BROKEN_SHOWN = ("gptq-config", "index-path-traversal")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=".tune2serve/demo", help="where models and reports go")


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.validate import validate_checkpoint
    from tune2serve.components.validate.report import verdict, write_reports
    from tune2serve.pipelines.demo.broken_models import make_broken, variant
    from tune2serve.pipelines.demo.tiny_models import TinySpec, make_tiny_model

    work = Path(args.workdir)
    reports = work / "reports"
    say = sys.stdout.write
    say(f"Building a tiny Qwen2 model (sharded safetensors, tokenizer, chat template) in {work}/ ...\n")
    good = make_tiny_model(work / "good-model", TinySpec(architecture="qwen2", tie_word_embeddings=True),
                           max_shard_size="100KB")
    cases: list[tuple[str, Path, str | None]] = [("good-model", good, None)]
    for name in BROKEN_SHOWN:
        broken = variant(name)
        cases.append((name, make_broken(good if broken.base == "qwen_sharded" else _llama(work), work / name, broken),
                      broken.code))
    all_as_expected = True
    for name, folder, expected_code in cases:
        report = validate_checkpoint(str(folder))
        md, page = write_reports(report, reports, stem=name)
        as_expected = report.ok if expected_code is None else (not report.ok and expected_code in report.codes("error"))
        all_as_expected &= as_expected
        mark = "✓" if as_expected else "✗ UNEXPECTED"
        say(f"\n{mark} {name}: {verdict(report)}\n")
        for f in report.sorted_findings():
            if f.severity != "info":
                say(f"    {f.severity:<7} {f.code}{f' [{f.file}]' if f.file else ''}: {_short(f.message)}\n")
        say(f"    reports: {md}  {page}\n")
    say("\n" + ("The gate works: the good model passes, the broken ones are stopped before deploy.\n"
                if all_as_expected else "Something did not go as expected (see above).\n"))
    return 0 if all_as_expected else 1


def _llama(work: Path) -> Path:
    from tune2serve.pipelines.demo.tiny_models import make_tiny_model

    path = work / "good-llama"
    return path if (path / "config.json").exists() else make_tiny_model(path)


def _short(message: str, width: int = 110) -> str:
    return message if len(message) <= width else message[: width - 1] + "…"
