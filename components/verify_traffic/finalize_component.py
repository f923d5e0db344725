"""The finalize KFP component, for the pipeline's dsl.ExitHandler: a thin wrapper over
``finalize.finalize``."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from tune2serve.components.step_component import step_component


@step_component
def finalize(project: str, region: str, production_endpoint: str, run_id: str,
             status: dsl.PipelineTaskFinalStatus, report: Output[Markdown]) -> str:
    """When the pipeline failed: rolls back the production endpoint and removes the staging
    endpoint and model this run made (found by the tune2serve-run label). When it
    succeeded: nothing to undo. Records what it did; idempotent."""
    from tune2serve.components.verify_traffic.finalize import finalize as run, pipeline_state_of

    result = run(project=project, region=region, production_endpoint=production_endpoint, run_id=run_id,
                 pipeline_state=pipeline_state_of(status))
    with open(report.path, "w", encoding="utf-8") as f:
        f.write(result.markdown())
    return "clean" if not result.problems else "needs attention: " + "; ".join(result.problems)
