"""The scheduling steps as KFP components: ``discover`` (what does this run promote, if
anything) and ``record_promotion`` (remember that it was promoted). Thin wrappers over
``discover.resolve_source`` and ``promotion_record.record_after_verify``."""

from typing import NamedTuple


from tune2serve.components.step_component import step_component


@step_component
def discover(source: str, export_dest: str) -> NamedTuple(  # type: ignore[valid-type]
        "DiscoverOutputs", proceed=bool, source=str, export_dest=str, reason=str):
    """Resolves what this run promotes. A plain source passes through (proceed=True);
    ``newest:PREFIX`` becomes the newest completed tuning output under PREFIX, exported to
    ``export_dest/<its folder>``, or proceed=False with the reason (none completed, or
    already promoted): the run then ends as a successful no-op.

    Args:
        source: the pipeline's source: a tuning output, a tuning job name, or newest:PREFIX.
        export_dest: the pipeline's export destination (a shared prefix for newest:PREFIX).
    """
    from collections import namedtuple

    from tune2serve.components.scheduling.discover import resolve_source

    found = resolve_source(source, export_dest)
    outputs = namedtuple("DiscoverOutputs", ["proceed", "source", "export_dest", "reason"])
    return outputs(found.proceed, found.source or "", found.export_dest, found.reason)


@step_component
def record_promotion(export_uri: str, endpoint: str, model: str, run_id: str, outcome: str,
                     production_endpoint: str = "") -> str:
    """Writes ``<export>.promotion.json`` beside the export when outcome is promoted or
    verified, so a scheduled run does not promote the same tuning output twice. Never
    fails the run over a storage error (the promotion already happened): it warns and
    says so in its output.

    Args:
        export_uri: the export that was promoted.
        endpoint: the endpoint deploy made.
        model: the Model resource name deploy registered.
        run_id: the pipeline job name, kept in the record.
        outcome: verify-traffic's outcome.
        production_endpoint: the endpoint promoted onto ("" when the new endpoint serves alone).
    """
    from tune2serve.components.scheduling.promotion_record import record_after_verify

    return record_after_verify(export_uri, endpoint=endpoint, model=model, outcome=outcome, run_id=run_id,
                               production_endpoint=production_endpoint)
