"""The discover step as a KFP component: what does this run promote, if anything. A thin
wrapper over ``discover.resolve_source``."""

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

    from tune2serve.components.discover.discover import resolve_source

    found = resolve_source(source, export_dest)
    outputs = namedtuple("DiscoverOutputs", ["proceed", "source", "export_dest", "reason"])
    return outputs(found.proceed, found.source or "", found.export_dest, found.reason)

