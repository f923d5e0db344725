"""The fanned-out export's three steps as KFP components: thin wrappers over ``fanout``.

``pipelines/promote.py`` runs ``export_plan``, then ``export_worker`` once per group in a
``dsl.ParallelFor`` over the plan's output, then ``export_commit``.
"""

from typing import NamedTuple

from kfp.dsl import Model, Output

from tune2serve.components.step_component import step_component


@step_component
def export_plan(
    source: str, dest: str, workers: int, min_worker_size: str = "20GB", base_model: str = "",
    checkpoint: str = "final", dtype: str = "auto", max_shard_size: str = "5GB",
) -> list:
    """Plans the export from the headers, claims DEST's staging area, and splits the
    shards into at most ``workers`` groups (one per worker, as JSON objects).

    Args:
        source: tuning output / checkpoint / adapter folder (local or gs://), or a tuning job name.
        dest: destination prefix (gs://bucket/prefix or a local folder).
        workers: most export workers to run at once.
        min_worker_size: smallest share of the model per worker, e.g. 20GB; a smaller model gets fewer workers.
        base_model: the base model folder for a LoRA adapter; "" = the adapter config's own.
        checkpoint: final, best, latest or a step number.
        dtype: auto, bfloat16, float16 or float32.
        max_shard_size: largest shard, e.g. 5GB.
    """
    from tune2serve.components.export.fanout.fanout import plan_export
    from tune2serve.components.logs import get_logger, log_event
    from tune2serve.components.ranges import check_parameters

    check_parameters(max_shard_size=max_shard_size, export_workers=workers, export_min_worker_size=min_worker_size)
    groups, result = plan_export(source, dest, workers=workers, min_worker_bytes=min_worker_size,
                                 base_model=base_model or None, checkpoint=checkpoint, dtype=dtype,
                                 max_shard_size=max_shard_size)
    log_event(get_logger("export"), "export.plan", f"{len(groups)} worker(s) for {result.bytes} bytes",
              dest=result.dest, workers=len(groups), noop=result.noop)
    return [g.to_json() for g in groups]


@step_component
def export_worker(
    source: str, dest: str, group: dict, base_model: str = "", checkpoint: str = "final", dtype: str = "auto",
    max_shard_size: str = "5GB",
) -> None:
    """Writes and stages one group's shards at DEST; publishes nothing.

    Args:
        source: as for export_plan.
        dest: as for export_plan.
        group: one item of export_plan's output.
        base_model: as for export_plan.
        checkpoint: as for export_plan.
        dtype: as for export_plan.
        max_shard_size: as for export_plan.
    """
    from tune2serve.components.export.fanout.fanout import Group, export_group

    export_group(source, dest, Group.from_json(group), base_model=base_model or None, checkpoint=checkpoint,
                 dtype=dtype, max_shard_size=max_shard_size)


@step_component
def export_commit(
    source: str, dest: str, model: Output[Model], base_model: str = "", checkpoint: str = "final",
    dtype: str = "auto", max_shard_size: str = "5GB",
) -> NamedTuple("ExportOutputs", export_uri=str):
    """Publishes what the workers staged: the index, config, tokenizer, manifest.json last.
    A gs:// source that already is deployable passed through: ``export_uri`` is the source
    and metadata ``passthrough`` says so (nothing was staged or copied).

    Args:
        source: as for export_plan.
        dest: as for export_plan.
        base_model: as for export_plan.
        checkpoint: as for export_plan.
        dtype: as for export_plan.
        max_shard_size: as for export_plan.
    """
    from collections import namedtuple

    from tune2serve.components.export.fanout.fanout import commit_export

    result = commit_export(source, dest, base_model=base_model or None, checkpoint=checkpoint, dtype=dtype,
                           max_shard_size=max_shard_size)
    model.uri = result.dest
    model.metadata.update(result.model_metadata())
    return namedtuple("ExportOutputs", ["export_uri"])(result.dest)
