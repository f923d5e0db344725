"""Tiny pipelines compiled in the tests: they run in seconds under kfp.local and write
what they saw, so a test can check which parameters a run really received."""

# no `from __future__ import annotations`: kfp reads the annotations as types

from pathlib import Path


def compile_echo(path: Path) -> Path:
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
    def echo(source: str, n: int, record: str) -> str:
        import json
        import pathlib

        if source == "fail":
            raise ValueError("asked to fail")
        if record:
            pathlib.Path(record).write_text(json.dumps({"source": source, "n": n}))
        return f"{source}:{n}"

    @dsl.pipeline(name="echo-pipeline", description="Echoes its parameters.")
    def echo_pipeline(source: str, n: int = 3, record: str = "") -> None:
        echo(source=source, n=n, record=record)

    compiler.Compiler().compile(echo_pipeline, str(path))
    return path


def compile_scheduled(path: Path) -> Path:
    """The scheduled-run shape proposed for promote.py: a discover step resolves
    ``source``/``export_dest`` with ``tune2serve.components.discover.discover.resolve_source``; the
    work sits in a sub-pipeline gated on discover's ``proceed`` passed in as an input
    (kfp.local 2.17 evaluates a condition on a DAG input, not on a task output). The
    work appends "source export_dest" to ``record``."""
    from typing import NamedTuple

    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
    def discover(source: str, export_dest: str) -> NamedTuple("Discovered", proceed=bool, source=str, export_dest=str, reason=str):
        from tune2serve.components.discover.discover import resolve_source

        found = resolve_source(source, export_dest)
        print(found.reason)
        return (found.proceed, found.source or "", found.export_dest, found.reason)

    @dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
    def promote(source: str, export_dest: str, record: str) -> None:
        with open(record, "a") as fh:
            fh.write(f"{source} {export_dest}\n")

    @dsl.pipeline(name="promote-if-due")
    def promote_if_due(proceed: bool, source: str, export_dest: str, record: str) -> None:
        with dsl.If(proceed == True):  # noqa: E712 - a KFP condition, not Python
            promote(source=source, export_dest=export_dest, record=record)

    @dsl.pipeline(name="scheduled-promotion")
    def scheduled(source: str, export_dest: str, record: str) -> None:
        found = discover(source=source, export_dest=export_dest)
        promote_if_due(proceed=found.outputs["proceed"], source=found.outputs["source"],
                       export_dest=found.outputs["export_dest"], record=record)

    compiler.Compiler().compile(scheduled, str(path))
    return path
