"""The pipeline's exit handler: when the run failed, undo what it did; either way, say
what happened. Idempotent: running it twice changes nothing the second time.

On failure: roll back the production endpoint's promotion of this run (``rollback.py``,
matched by the recorded run id), then undeploy and delete every endpoint this run's
deploy step made (found by the ``tune2serve-run`` label deploy writes) and delete the
Models it registered, so no machine hours are billed for a failed run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tune2serve.components.errors import PromotionError, VertexError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.verify_traffic.canary import cleanup_staging
from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
from tune2serve.components.verify_traffic.record import sanitize_label_value
from tune2serve.components.verify_traffic.rollback import try_rollback
from tune2serve.components.vertex.clients import target

RUN_LABEL = "tune2serve-run"
_log = get_logger("verify_traffic.finalize")


@dataclass
class FinalizeResult:
    pipeline_state: str
    actions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"# finalize: pipeline {self.pipeline_state}", ""]
        lines += [f"- {a}" for a in self.actions] or ["- nothing to undo"]
        if self.problems:
            lines += ["", "## Problems (act on these)", ""] + [f"- {p}" for p in self.problems]
        return "\n".join(lines) + "\n"


def finalize(*, project: str, region: str, production_endpoint: str, run_id: str, pipeline_state: str,
             api: EndpointApi | None = None) -> FinalizeResult:
    """``pipeline_state`` is KFP's final state ("SUCCEEDED", "FAILED", "CANCELLED", ...)."""
    result = FinalizeResult(pipeline_state)
    if pipeline_state.upper() == "SUCCEEDED":
        return result
    api = api or EndpointApi(target(project, region))
    if production_endpoint:
        from tune2serve.components.vertex.resources import endpoint_name

        name = str(endpoint_name(production_endpoint, project, region))
        # any promotion still in its canary state is this run's: the lease lets only one
        # run promote at a time, and the exit handler runs after every task has ended
        rolled, error = try_rollback(api, name)
        if rolled is not None:
            result.actions.append(f"{name}: {rolled.action.replace('_', ' ')}; serving {rolled.restored_split}")
        else:
            result.problems.append(f"{name}: rollback did not finish: {error}")
    if run_id:
        _remove_run_resources(api, sanitize_label_value(run_id), result)
    log_event(_log, "finalize.done", f"finalize after a {pipeline_state} run: {len(result.actions)} actions, "
              f"{len(result.problems)} problems", logging.WARNING if result.problems else logging.INFO,
              run_id=run_id, actions=result.actions, problems=result.problems)
    return result


def _remove_run_resources(api: EndpointApi, run: str, result: FinalizeResult) -> None:
    try:
        endpoints = [e for e in api.list_endpoints() if e.labels.get(RUN_LABEL) == run]
    except (VertexError, PromotionError) as e:
        result.problems.append(f"could not list endpoints to clean up run {run}: {e}")
        return
    models = {d.model for e in endpoints for d in e.deployed_models}
    for e in endpoints:
        note = cleanup_staging(api, e.name)
        (result.actions if note.startswith("removed") else result.problems).append(note)
    for model in sorted(models):
        try:
            if api.get_model(model).get("labels", {}).get(RUN_LABEL) == run:
                api.delete_model(model)
                result.actions.append(f"deleted the model {model}")
        except VertexError as e:
            result.problems.append(f"could not delete the model {model}: {e}")
