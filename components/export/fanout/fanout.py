"""One export split over several machines: plan, one worker per group of shards, commit.

Why: one worker is bounded by one machine's network and CPU; a 480 B MoE export is
~960 GB. The output shards are independent once planned (the plan fixes every shard's
tensors from the headers), so the work splits by shard with nothing to coordinate but
the staging area at DEST, and the distributed engine is Vertex AI Pipelines' own
``dsl.ParallelFor`` (``pipelines/promote.py``), not a scheduler of ours:

* ``plan_export``: reads headers only, plans the shards, checks DEST (a finished
  identical export is a no-op; a different one is refused), claims ``DEST/_staging/``
  for this export, and splits the shards into contiguous groups of about equal bytes
  (contiguous: each worker then reads the base front to back). A model smaller than
  ``min_worker_bytes`` per worker gets fewer workers; a small model, one.
* ``export_group``: a worker; it plans again from the headers (deterministic, cheap),
  writes and stages its group's shards, recording them in ``_staging/state-K.json``.
* ``commit_export``: once every worker is done, the ordinary export with every shard
  reused from staging (checked by crc32c / sha256; any missing is written here), then
  the small files, the index and ``manifest.json`` last. Before it, nothing at DEST is
  visible as complete.

The result equals the single-worker export byte for byte: the same plan, the same
shard writer, the same commit (tests/export/test_fanout.py).

These are the pipeline's export, so a gs:// source that already is a deployable folder
passes through (``pass_through``, ``plan/passthrough.py``): the plan has one empty group, the
worker does nothing, and commit returns the source itself as the export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tune2serve.components import ranges
from tune2serve.components.export.export import ExportResult, Part, export_checkpoint

MIN_WORKER_BYTES = "20GB"  # below this share per worker, more workers cost more than they save


@dataclass(frozen=True)
class Group:
    """The shards one worker writes."""

    index: int
    shards: list[str]
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "shards": self.shards, "bytes": self.bytes}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Group:
        return cls(int(doc["index"]), [str(s) for s in doc["shards"]], int(doc.get("bytes", 0)))


def split(shards: list[tuple[str, int]], workers: int, min_worker_bytes: int) -> list[Group]:
    """Contiguous groups of about equal bytes: at most ``workers``, none (but a lone one)
    under ``min_worker_bytes``, never more groups than shards, always at least one."""
    total = sum(b for _, b in shards)
    count = max(1, min(workers, len(shards), total // max(1, min_worker_bytes)))
    groups: list[list[tuple[str, int]]] = [[] for _ in range(count)]
    done = 0
    for name, nbytes in shards:
        # The group whose byte range holds this shard's midpoint: balanced and contiguous.
        k = min(count - 1, int((done + nbytes / 2) * count // max(1, total)))
        groups[k].append((name, nbytes))
        done += nbytes
    groups = [g for g in groups if g] or [[]]
    return [Group(i, [n for n, _ in g], sum(b for _, b in g)) for i, g in enumerate(groups)]


def plan_export(source: str, dest: str, *, workers: int, min_worker_bytes: str | int = MIN_WORKER_BYTES,
                pass_through: bool = True, **options: Any) -> tuple[list[Group], ExportResult]:
    """The groups (and the plan's result: ``noop`` when DEST already holds this export,
    then one empty group). ``options`` are ``export_checkpoint``'s."""
    min_bytes = ranges.EXPORT_MIN_WORKER_SIZE.bytes(min_worker_bytes, "export_min_worker_size")  # before any I/O
    ranges.EXPORT_WORKERS.check(workers, "export_workers")
    part = Part("plan")
    result = export_checkpoint(source, dest, part=part, pass_through=pass_through, **options)
    groups = split(part.planned, workers, min_bytes) if not result.noop else [Group(0, [], 0)]
    return groups, result


def export_group(source: str, dest: str, group: Group, pass_through: bool = True, **options: Any) -> ExportResult:
    """A worker: writes and stages ``group``'s shards; publishes nothing."""
    return export_checkpoint(source, dest, part=Part("worker", shards=group.shards, worker=group.index),
                             pass_through=pass_through, **options)


def commit_export(source: str, dest: str, pass_through: bool = True, **options: Any) -> ExportResult:
    """Publishes the export the workers staged (index, small files, manifest last)."""
    return export_checkpoint(source, dest, part=Part("commit"), pass_through=pass_through, **options)


__all__ = ["Group", "MIN_WORKER_BYTES", "commit_export", "export_group", "plan_export", "split"]
