"""``tune2serve compile [--output PATH] [--image IMAGE]``: write the pipeline YAML."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default="compiled/promote_checkpoint.yaml", metavar="PATH",
        help="where to write the compiled pipeline (default: compiled/promote_checkpoint.yaml)",
    )
    parser.add_argument(
        "--image", default=None, metavar="IMAGE",
        help="container image for every step (default: the image of this package version)",
    )


def run(args: argparse.Namespace) -> int:
    from tune2serve.pipelines.compile import compile_pipeline

    path = compile_pipeline(args.output, image=args.image)
    sys.stderr.write(f"compiled the promote-checkpoint pipeline to {path}\n")
    return 0
