"""The verify_traffic KFP component: a thin wrapper over ``verify.verify_traffic``."""

from typing import NamedTuple

from kfp.dsl import HTML, Markdown, Metrics, Output

from tune2serve.components.step_component import step_component


@step_component
def verify_traffic(endpoint: str, model: str, production_endpoint: str, project: str, region: str,
                   canary_percent: int, steps: str, significance: float, keep_previous_s: int,
                   metrics: Output[Metrics], report_md: Output[Markdown], report_html: Output[HTML],
                   run_id: str = "", bake_s: int = 0, max_error_rate_delta: float = 0.01,
                   max_latency_ratio: float = 1.5, min_bake_requests: int = 20, quality_verdict: str = "",
                   force_promote: str = "",
                   ) -> NamedTuple("VerifyOutputs", outcome=str, traffic_split=str, override=str):  # type: ignore[valid-type]
    """Checks the new endpoint serves 100% (production_endpoint ""), or promotes the model
    onto production_endpoint through canary steps and removes the staging endpoint; raises
    (fails the step) when it rolled back, after writing the reports. run_id (the pipeline
    job id) names the run on the endpoint's lease and promotion record, so the exit
    handler's finalize for the same run can finish a promotion this task left half-done.
    bake_s > 0 holds each canary step below 100% that long and rolls back when Cloud
    Monitoring shows the canary worse than the serving model on real traffic (by
    max_error_rate_delta, max_latency_ratio) or with fewer than min_bake_requests.
    quality_verdict (the quality gate's) of hold or reject promotes nothing unless
    force_promote gives a reason: an audited override, output as JSON in override ("" when none)."""
    import json
    from collections import namedtuple

    from tune2serve.components.errors import PromotionAbortedError
    from tune2serve.components.ranges import check_parameters
    from tune2serve.components.verify_traffic.bake import BakePolicy
    from tune2serve.components.verify_traffic.report import write_reports
    from tune2serve.components.verify_traffic.rollback import UNNAMED_PIPELINE_RUN
    from tune2serve.components.verify_traffic.verify import verify_traffic as run

    check_parameters(canary_percent=canary_percent, steps=steps, significance=significance,
                     keep_previous_s=keep_previous_s, bake_s=bake_s, max_error_rate_delta=max_error_rate_delta,
                     max_latency_ratio=max_latency_ratio, min_bake_requests=min_bake_requests)
    result = run(project=project, region=region, endpoint=endpoint, model=model or None,
                 production_endpoint=production_endpoint or None, steps=steps or None,
                 canary_percent=canary_percent, significance=significance, keep_previous_s=keep_previous_s,
                 run_id=run_id or UNNAMED_PIPELINE_RUN,
                 bake=BakePolicy(bake_s, max_error_rate_delta, max_latency_ratio, min_bake_requests),
                 quality_verdict=quality_verdict, force_promote=force_promote)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    write_reports(result, report_md.path, report_html.path)
    if not result.ok:
        raise PromotionAbortedError(f"verify-traffic {result.outcome}: {result.reason}")
    return namedtuple("VerifyOutputs", ["outcome", "traffic_split", "override"])(
        result.outcome, json.dumps(result.traffic_split), json.dumps(result.override) if result.override else "")
