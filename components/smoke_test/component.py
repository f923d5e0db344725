"""The smoke-test step as a KFP component: a thin wrapper over ``smoke.run_smoke_test``."""

from typing import NamedTuple

from kfp.dsl import Markdown, Metrics, Output

from tune2serve.components.step_component import step_component


@step_component
def smoke_test(
    endpoint: str, project: str, region: str, golden: str, metrics: Output[Metrics], report: Output[Markdown],
) -> NamedTuple("SmokeOutputs", passed=bool):
    """Sends every request kind and the golden prompts (JSON Lines text; "" = built-in
    sanity prompt) to the endpoint; fails the step, after writing the report, when a
    check fails."""
    from collections import namedtuple

    from tune2serve.components.smoke_test.report import render_markdown
    from tune2serve.components.smoke_test.smoke import raise_if_failed, run_smoke_test

    result = run_smoke_test(endpoint, project, region, golden, golden_source="golden parameter")
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(render_markdown(result))
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    raise_if_failed(result)
    return namedtuple("SmokeOutputs", ["passed"])(True)
