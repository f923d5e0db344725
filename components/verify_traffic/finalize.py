"""The pipeline's exit handler: when the run failed, undo what it did; either way, say
what happened. Idempotent: running it twice changes nothing the second time.

On failure: roll back the production endpoint's promotion of this run (``rollback.py``,
matched by the run id recorded on the endpoint, or an unnamed pipeline run's), taking
over the promotion lease if this run's dead verify-traffic task still holds it — unless
someone else changed the endpoint's split during the promotion (the record says
"stopped", or the split is not one the promotion set): then it is left as they set it; then
undeploy and delete every endpoint this run's deploy step made (found by the
``tune2serve-run`` label deploy writes) and delete the Models it registered, so no
machine hours are billed for a failed run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tune2serve.components import markdown as md
from tune2serve.components.errors import PromotionError, VertexError
from tune2serve.components.logs import get_logger, log_event
from tune2serve.components.verify_traffic.canary import cleanup_staging
from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
from tune2serve.components.vertex.resources import sanitize_label_value
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
        """Actions and problems quote resource names and API errors: literal text."""
        lines = [f"# finalize: pipeline {md.text(self.pipeline_state)}", ""]
        lines += [f"- {md.text(a)}" for a in self.actions] or ["- nothing to undo"]
        if self.problems:
            lines += ["", "## Problems (act on these)", ""] + [f"- {md.text(p)}" for p in self.problems]
        return "\n".join(lines) + "\n"


def pipeline_state_of(status: Any) -> str:
    """KFP's final state from what the exit handler is given: a
    ``dsl.PipelineTaskFinalStatus`` (``.state``) or the dict behind it (``{"state": ...}``)."""
    state = status.get("state") if isinstance(status, Mapping) else getattr(status, "state", status)
    return str(state or "").upper()


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
        rolled, error = try_rollback(api, name, run_id=run_id or None, take_over_run=bool(run_id),
                                     reason=f"pipeline run {run_id or '(unnamed)'} ended {pipeline_state}")
        if rolled is not None:
            result.actions.append(f"{name}: {rolled.action.replace('_', ' ')}; serving {rolled.restored_split}")
            result.actions += list(rolled.notes)
        else:
            result.problems.append(f"{name}: rollback did not finish: {error}")
    if run_id:
        _remove_run_resources(api, sanitize_label_value(run_id), result)
    log_event(_log, "finalize.done", f"finalize after a {pipeline_state} run: {len(result.actions)} actions, "
              f"{len(result.problems)} problems", logging.WARNING if result.problems else logging.INFO,
              run_id=run_id, actions=result.actions, problems=result.problems)
    return result


def _remove_run_resources(api: EndpointApi, run: str, result: FinalizeResult) -> None:
    from tune2serve.components.vertex.endpoints import list_endpoints

    try:
        endpoints = list_endpoints(api.vertex, {RUN_LABEL: run})
    except PromotionError as e:
        result.problems.append(f"could not list endpoints to clean up run {run}: {e}")
        return
    models = {d.model.split("@")[0] for e in endpoints for d in e.deployed_models}
    for e in endpoints:
        note = cleanup_staging(api, e.name)
        (result.actions if note.startswith("removed") else result.problems).append(note)
    for model in sorted(models):
        try:
            found = api.get_model(model)
            still = sorted({str(d.get("endpoint", "")) for d in found.get("deployed_models") or []})
            if found.get("labels", {}).get(RUN_LABEL) != run:
                continue
            if still:  # e.g. the canary left on production when someone else took over its split
                result.actions.append(f"kept the model {model}: it is still deployed on {', '.join(still)}")
                continue
            api.delete_model(model)
            result.actions.append(f"deleted the model {model}")
        except VertexError as e:
            result.problems.append(f"could not delete the model {model}: {e}")
