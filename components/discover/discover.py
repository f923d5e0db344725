"""What a run promotes: the pipeline's ``source`` resolved, or a no-op that says why.

A schedule re-submits the same pipeline parameters every time it fires, so a scheduled
run cannot name *which* tuning output to promote. It names a prefix instead:
``source = "newest:gs://bucket/tuning-runs"``. The run's first step resolves it
(``resolve_source``) to the newest *completed* tuning output under the prefix, and the
run ends at once, successfully, as a no-op that says why, when there is none or when
that output was already promoted (``promotion_record.find_promotion``). A plain URI
resolves to itself, so the same pipeline serves the trigger, the UI and
``tune2serve submit``/``run`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from tune2serve.components.checkpoint.training_state import is_training_state
from tune2serve.components.checkpoint.storage import open_folder
from tune2serve.components.errors import SourceNotFoundError, UsageError
from tune2serve.components.logs import get_logger, log_event

NEWEST_PREFIX = "newest:"

# Files that mean "final weights are here" (training state, checkpoint/training_state.py, never does).
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CONFIGS = {"config.json", "adapter_config.json"}
_FINAL_FOLDERS = {"final", "checkpoint-final"}

_log = get_logger("scheduling.discover")


@dataclass(frozen=True)
class SourceResolution:
    """What a run promotes (``source``) and where its export goes (``export_dest``) when
    ``proceed``; otherwise nothing, and ``reason`` says why."""

    source: str | None
    export_dest: str
    proceed: bool
    reason: str


def _objects_with_times(prefix: str) -> list[tuple[str, float]]:
    """(relative name, modification time) of every file under ``prefix``, from one listing
    through the storage abstraction. Nothing there yet is an empty list (no tuning output
    so far); a bucket that does not exist is an error naming the schedule's flag."""
    folder = open_folder(prefix)
    try:
        listing = folder.list()
    except SourceNotFoundError:
        if not folder.store_exists():
            raise SourceNotFoundError(f"{prefix}: its bucket does not exist; check the schedule's "
                                      "--source-prefix") from None
        return []
    return [(o.name, o.updated or 0.0) for o in listing if o.not_regular is None]


def _completed(files: set[str]) -> bool:
    """A run is complete when a folder that holds final weights has a config beside them:
    the run root (HF Trainer's final ``save_model``), or a folder named ``final`` /
    ``checkpoint-final`` (Vertex tuning ``postprocess/node-0/checkpoints/final``, Model
    Garden ``adapter/node-0/checkpoint-final``). ``checkpoint-N/`` alone means training
    may still be running."""
    folders: dict[str, set[str]] = {}
    for name in files:
        folder, _, base = name.rpartition("/")
        folders.setdefault(folder, set()).add(base)
    for folder, names in folders.items():
        if folder and folder.rsplit("/", 1)[-1] not in _FINAL_FOLDERS:
            continue
        has_weights = any(n.endswith(_WEIGHT_SUFFIXES) and not is_training_state(n) for n in names)
        if has_weights and names & _CONFIGS:
            return True
    return False


def newest_tuning_output(prefix: str) -> str | None:
    """The URI of the newest completed tuning output directly under ``prefix`` (one
    folder per tuning run), or None. Newest = the latest object written in the run."""
    runs: dict[str, tuple[set[str], float]] = {}
    for name, mtime in _objects_with_times(prefix.rstrip("/")):
        run, _, rest = name.partition("/")
        if not rest:
            continue
        files, newest = runs.get(run, (set(), 0.0))
        files.add(rest)
        runs[run] = (files, max(newest, mtime))
    done = [(mtime, run) for run, (files, mtime) in runs.items() if _completed(files)]
    if not done:
        return None
    return f"{prefix.rstrip('/')}/{max(done)[1]}"


def resolve_source(source: str, export_dest: str) -> SourceResolution:
    """Resolves the pipeline's ``source`` and ``export_dest`` parameters for one run.

    A plain source resolves to itself and ``export_dest`` as given. ``newest:PREFIX``
    resolves to the newest completed tuning output under PREFIX, exported to
    ``export_dest/<its folder name>`` (a schedule's ``export_dest`` is a prefix shared by
    its runs), unless a promotion record under ``export_dest`` says it was promoted
    already — then, as when PREFIX holds no completed output, the run has nothing to do.
    The decision is logged with its reason (the step's log is where an operator looks).
    """
    found = _resolve(source, export_dest)
    log_event(_log, "discover.proceed" if found.proceed else "discover.nothing_to_do", found.reason,
              source=found.source, export_dest=found.export_dest, proceed=found.proceed)
    return found


def _resolve(source: str, export_dest: str) -> SourceResolution:
    if not source.startswith(NEWEST_PREFIX):
        return SourceResolution(source, export_dest, True, f"promoting {source}")
    prefix = source[len(NEWEST_PREFIX):].rstrip("/")
    if not prefix:
        raise UsageError(f"source {source!r} names no prefix; expected 'newest:gs://BUCKET/PREFIX'")
    newest = newest_tuning_output(prefix)
    if newest is None:
        return SourceResolution(None, export_dest, False, f"nothing to do: no completed tuning output under {prefix}")
    dest = f"{export_dest.rstrip('/')}/{newest.rsplit('/', 1)[-1]}"
    from tune2serve.components.promotion_record.promotion_record import find_promotion

    record = find_promotion(newest, export_dest)
    if record is not None:
        return SourceResolution(newest, dest, False, f"nothing to do: {newest} was already promoted "
                                f"(export {record.export}, endpoint {record.endpoint}, at {record.time})")
    return SourceResolution(newest, dest, True, f"promoting {newest}, the newest completed tuning output under {prefix}")


__all__ = ["NEWEST_PREFIX", "SourceResolution", "newest_tuning_output", "resolve_source"]
