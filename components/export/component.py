"""The export step as a KFP component: a thin wrapper over ``export.export_checkpoint``."""

from typing import NamedTuple

from kfp.dsl import Model, Output

from tune2serve.components.step_component import step_component


@step_component
def export(
    source: str, dest: str, model: Output[Model], base_model: str = "", checkpoint: str = "final",
    dtype: str = "auto", max_shard_size: str = "5GB",
) -> NamedTuple("ExportOutputs", export_uri=str):
    """Turns a tuning job's output into a deployable folder at ``dest``; a gs:// source
    that already is one passes through (``export_uri`` is the source, nothing is copied,
    metadata ``passthrough`` says so).

    Args:
        source: tuning output / checkpoint / adapter folder (local or gs://), or a tuning job name.
        dest: destination prefix (gs://bucket/prefix or a local folder).
        base_model: the base model folder for a LoRA adapter; "" = the adapter config's own.
        checkpoint: final, best, latest or a step number.
        dtype: auto, bfloat16, float16 or float32.
        max_shard_size: largest shard, e.g. 5GB.
    """
    from collections import namedtuple

    from tune2serve.components.export.export import export_checkpoint
    from tune2serve.components.ranges import check_parameters

    check_parameters(max_shard_size=max_shard_size)
    result = export_checkpoint(source, dest, base_model=base_model or None, checkpoint=checkpoint, dtype=dtype,
                               max_shard_size=max_shard_size, pass_through=True)
    model.uri = result.dest
    model.metadata.update(result.model_metadata())
    return namedtuple("ExportOutputs", ["export_uri"])(result.dest)
