"""The verify_traffic KFP component: a thin wrapper over ``verify.verify_traffic``."""

from typing import NamedTuple

from kfp.dsl import HTML, Markdown, Metrics, Output

from tune2serve.components.step_component import step_component


@step_component
def verify_traffic(endpoint: str, model: str, production_endpoint: str, project: str, region: str,
                   canary_percent: int, steps: str, significance: float, keep_previous_s: int,
                   metrics: Output[Metrics], report_md: Output[Markdown], report_html: Output[HTML],
                   run_id: str = "",
                   ) -> NamedTuple("VerifyOutputs", outcome=str, traffic_split=str):  # type: ignore[valid-type]
    """Checks the new endpoint serves 100% (production_endpoint ""), or promotes the model
    onto production_endpoint through canary steps and removes the staging endpoint; raises
    (fails the step) when it rolled back, after writing the reports. run_id (the pipeline
    job id) names the run on the endpoint's lease and promotion record, so the exit
    handler's finalize for the same run can finish a promotion this task left half-done."""
    import json
    from collections import namedtuple

    from tune2serve.components.errors import PromotionAbortedError
    from tune2serve.components.verify_traffic.report import write_reports
    from tune2serve.components.verify_traffic.rollback import UNNAMED_PIPELINE_RUN
    from tune2serve.components.verify_traffic.verify import verify_traffic as run

    result = run(project=project, region=region, endpoint=endpoint, model=model or None,
                 production_endpoint=production_endpoint or None, steps=steps or None,
                 canary_percent=canary_percent or None, significance=significance, keep_previous_s=keep_previous_s,
                 run_id=run_id or UNNAMED_PIPELINE_RUN)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    write_reports(result, report_md.path, report_html.path)
    if not result.ok:
        raise PromotionAbortedError(f"verify-traffic {result.outcome}: {result.reason}")
    return namedtuple("VerifyOutputs", ["outcome", "traffic_split"])(result.outcome, json.dumps(result.traffic_split))
