"""The smoke-test step as a KFP component: a thin wrapper over ``smoke.run_smoke_test``."""

from typing import NamedTuple

from kfp.dsl import HTML, Markdown, Metrics, Output

from tune2serve.components.step_component import step_component


@step_component
def smoke_test(
    endpoint: str, project: str, region: str, golden: str, metrics: Output[Metrics], report: Output[Markdown],
    report_html: Output[HTML],
) -> NamedTuple("SmokeOutputs", passed=bool):
    """Sends every request kind and the golden prompts (JSON Lines text; "" = built-in
    sanity prompt) to the endpoint; fails the step, after writing the reports (Markdown
    and HTML), when a check fails."""
    from collections import namedtuple

    from tune2serve.components.smoke_test.report import write_reports
    from tune2serve.components.smoke_test.smoke import raise_if_failed, run_smoke_test

    result = run_smoke_test(endpoint, project, region, golden, golden_source="golden parameter")
    write_reports(result, report.path, report_html.path)
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
    raise_if_failed(result)
    return namedtuple("SmokeOutputs", ["passed"])(True)
