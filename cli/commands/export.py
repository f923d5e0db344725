"""``tune2serve export SOURCE DEST``: a tuning job's output → a deployable folder (DESIGN.md §4).

Exit 0 DEST holds a complete export · 1 bad input (DEST holds no partial export) ·
2 usage error; the CLI's exit-code table maps the raised errors. With ``--json`` one
object goes to stdout, ``{"ok": false, "error": ...}`` included when the export fails.
Top-level imports: stdlib only.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tune2serve.components import ranges  # stdlib-only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="tuning output, checkpoint or adapter folder (local or gs://), "
                             "or a tuning job projects/P/locations/L/tuningJobs/ID")
    parser.add_argument("dest", metavar="DEST", help="where the export goes: a local folder or gs://bucket/prefix")
    parser.add_argument("--base-model", default=None, metavar="SRC",
                        help="the base model folder for a LoRA adapter (default: the adapter config's "
                             "base_model_name_or_path when that folder exists)")
    parser.add_argument("--checkpoint", default="final", metavar="final|best|latest|STEP",
                        help="which checkpoint of a training run (default: final)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="dtype of the written weights (default: the base's)")
    parser.add_argument("--max-shard-size", type=ranges.MAX_SHARD_SIZE.from_text, default="5GB", metavar="SIZE",
                        help=ranges.MAX_SHARD_SIZE.help("largest safetensors shard written (default: 5GB)"))
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _progress_bar() -> tuple[Any, Any]:
    """A tqdm bar on stderr when it is a terminal; structured log lines do otherwise."""
    if not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(unit="B", unit_scale=True, desc="export", file=sys.stderr)
    return bar, bar.update


def run(args: argparse.Namespace) -> int:
    from tune2serve.components.errors import PromotionError
    from tune2serve.components.export.export import export_checkpoint

    bar, progress = _progress_bar()
    try:
        result = export_checkpoint(args.source, args.dest, base_model=args.base_model, checkpoint=args.checkpoint,
                                   dtype=args.dtype, max_shard_size=args.max_shard_size, progress=progress)
    except PromotionError as e:
        if args.json:
            sys.stdout.write(json.dumps({"ok": False, "dest": args.dest, "files": [], "error": str(e)}) + "\n")
        raise
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        what = "already held this export; nothing to do" if result.noop else "holds a complete export"
        sys.stdout.write(f"{result.dest} {what}: {len(result.files)} files, {result.bytes} bytes, "
                         f"{result.parameter_count} parameters ({result.dtype})\n{result.explanation}\n")
    return 0
