"""``export_checkpoint``: a tuning job's output in, a deployable folder at DEST out.

Plan, then execute: the source layout is discovered, the adapter mapped onto its base
and every output tensor, shard and small file decided before anything is written, so
bad input (wrong base, missing module, corrupt shard, unsafe pickle) fails with nothing
at DEST. Then tensors stream from the base, one at a time, through the merge into
shards, which ``upload.Publisher`` stages and publishes atomically (see its docstring).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tune2serve.components.checkpoint import bounded_json, secrets
from tune2serve.components.checkpoint.index import find_weight_files
from tune2serve.components.checkpoint.manifest import Manifest
from tune2serve.components.checkpoint.storage import Folder, ObjectInfo, open_folder
from tune2serve.components.checkpoint.tensor_reader import CheckpointTensors, SafetensorsFile
from tune2serve.components.errors import MergeError, PromotionError, SourceNotFoundError, UsageError
from tune2serve.components.export.plan.config_clean import (
    TOKENIZER_FILES, clean_config, generation_config_from, transformers_version,
)
from tune2serve.components.export.source.layout import CheckpointChoice, Selection, discover
from tune2serve.components.export.merge.embeddings import untie_trained_embedding
from tune2serve.components.export.merge.moe import plan_param_lora, split_param_lora
from tune2serve.components.export.plan.names import DiskNames
from tune2serve.components.export.merge.tokens import apply_token_rows, split_token_rows
from tune2serve.components.export.source.producers import check_full_weights
from tune2serve.components.export.plan import passthrough
from tune2serve.components.export.merge.merge import (ADAPTER_CONFIG, AdapterPlan, LoraOptions, adapter_needs_torch,
                                                     plan_adapter, read_adapter)
from tune2serve.components.export.plan.plan import DTYPES, OutputPlan, output_dtype, plan_output
from tune2serve.components.export.source.sources import describe_source, fingerprints, open_source, open_weights
from tune2serve.components.export.merge.stream import TensorStream, import_torch_in_background
from tune2serve.components.export.timing import Spans
from tune2serve.components.export.publish.upload import Publisher, fanout_holder
from tune2serve.components.export.publish.writer import (
    INDEX_NAME, ShardPlan, index_json, parse_size, plan_shards, write_shard, write_small,
)
from tune2serve.components.image import package_version
from tune2serve.components.logs import get_logger, log_event

logger = get_logger("export")
Progress = Callable[[int], None]


@dataclass
class ExportResult:
    """What ``--json`` prints and the KFP component records."""

    ok: bool
    dest: str
    files: list[dict[str, Any]]
    source: str
    source_kind: str
    explanation: str
    noop: bool
    parameter_count: int
    bytes: int
    dtype: str
    checkpoint: str
    base_model: str | None = None
    merge: dict[str, Any] | None = None
    manifest_digest: str = ""
    notes: list[str] = field(default_factory=list)
    passthrough: bool = False  # dest is SOURCE itself, already deployable (plan/passthrough.py)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def model_metadata(self) -> dict[str, Any]:
        """The ``dsl.Model`` artifact's metadata: what the Vertex UI shows of an export
        (the file list stays in the manifest)."""
        return {
            "source": self.source, "source_kind": self.source_kind, "base_model": self.base_model or "",
            "merge": self.merge or {}, "bytes": self.bytes, "parameter_count": self.parameter_count,
            "manifest_digest": self.manifest_digest, "dtype": self.dtype, "noop": self.noop,
            "passthrough": self.passthrough, "notes": self.notes,
        }


@dataclass
class _Checkpoint:
    """One folder of the source (or base) with its direct file names."""

    folder: Folder
    files: set[str]
    selection: Selection


def _children(listing: list[ObjectInfo], subdir: str) -> set[str]:
    prefix = f"{subdir}/" if subdir else ""
    return {o.name[len(prefix):] for o in listing if o.name.startswith(prefix) and "/" not in o.name[len(prefix):]}


def _open_checkpoint(folder: Folder, choice: CheckpointChoice) -> _Checkpoint:
    """The checkpoint ``choice`` picks in ``folder``, which is listed here once and then
    read as that listing saw it (``Folder.pinned``: on GCS, at the generations listed)."""
    listing = folder.list()
    folder = folder.pinned(listing)
    sel = discover(folder, choice, listing)
    return _Checkpoint(folder.child(sel.subdir) if sel.subdir else folder, _children(listing, sel.subdir), sel)


def _open_base(base_model: str | None, options: LoraOptions, label: str) -> _Checkpoint:
    """The base for an adapter: --base-model, else the adapter config's
    base_model_name_or_path when that is a folder that exists (hub ids cannot be
    downloaded here)."""
    ref = base_model or options.base_model_name_or_path
    if not ref:
        raise MergeError(f"{label}: is a LoRA adapter and names no base model; pass --base-model (a local folder or gs:// URI)")
    try:
        base = _open_checkpoint(open_folder(ref), CheckpointChoice("final"))
    except (SourceNotFoundError, PromotionError) as e:
        how = "--base-model" if base_model else f"the adapter's base_model_name_or_path ({ref!r})"
        raise MergeError(f"{label}: is a LoRA adapter and its base model, {how}, cannot be opened ({e}); "
                         "pass --base-model with the base model's folder") from e
    if base.selection.is_adapter:
        raise MergeError(f"{base.folder.uri}: is itself a LoRA adapter; --base-model must be a full model folder")
    return base


def _weight_names(files: set[str]) -> list[str]:
    found = find_weight_files([ObjectInfo(n, 0) for n in files])
    names = found.safetensors or found.bins
    index = found.safetensors_index if found.safetensors else found.bin_index
    names = [n for n in names if not n.startswith("adapter_model")]
    return sorted(set(names + ([index] if index else []) + ["config.json"] + (["generation_config.json"] if "generation_config.json" in files else [])))


def _has_chat_template(folder: Folder, files: set[str]) -> bool:
    if files & {"chat_template.jinja", "chat_template.json"}:
        return True
    if "tokenizer_config.json" in files:
        try:
            return bool(bounded_json.read_object(folder, "tokenizer_config.json").get("chat_template"))
        except ValueError:
            return False
    return False


def _small_files(places: list[_Checkpoint], weights: _Checkpoint, config: dict[str, Any], plan: OutputPlan,
                 merging: bool) -> tuple[dict[str, bytes], list[str]]:
    """config.json, generation_config.json and the tokenizer (from the first place that
    has one: the tuned checkpoint, the run's top level, then the base)."""
    version = transformers_version()
    notes: list[str] = []
    out: dict[str, bytes] = {}
    cleaned = clean_config(config, dtype=plan.dtype, vocab_size=plan.vocab_size if merging else None,
                           tie_word_embeddings=plan.tie_word_embeddings if merging else None, version=version)
    out["config.json"] = (json.dumps(cleaned, indent=2, sort_keys=True) + "\n").encode()
    gen = next((p for p in places + [weights] if "generation_config.json" in p.files), None)
    out["generation_config.json"] = (gen.folder.read_bytes("generation_config.json") if gen else
                                     (json.dumps(generation_config_from(config, version), indent=2) + "\n").encode())
    tok = next((p for p in places if p.files & {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"}), None)
    if tok is None:
        notes.append("no tokenizer found in the tuned output or the base; validate will refuse this export")
        return _scrubbed(out), notes
    for name in TOKENIZER_FILES:
        if name in tok.files:
            out[name] = tok.folder.read_bytes(name)
    notes.append(f"tokenizer from {tok.folder.uri}")
    if not _has_chat_template(tok.folder, tok.files):
        for p in places:
            for name in ("chat_template.jinja", "chat_template.json"):
                if name in p.files:
                    out[name] = p.folder.read_bytes(name)
                    notes.append(f"chat template from {p.folder.join(name)}")
                    return _scrubbed(out), notes
    return _scrubbed(out), notes


def _scrubbed(files: dict[str, bytes]) -> dict[str, bytes]:
    """Credentials (by key: ``token``, ``use_auth_token``...; by value: URL userinfo,
    ``Bearer``, token shapes) never leave with the export; the log names file and JSON
    path, never the value."""
    for name, hit in secrets.scrub_json_files(files):
        log_event(logger, "export.secret_dropped", f"{hit.describe(name)}; it is not copied to the export",
                  level=logging.WARNING, file=name, json_path=hit.path)
    return files


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Part:
    """One step of a fanned-out export (``fanout``); None = the whole export in one.

    ``plan``: plans and claims staging, writes nothing (``planned`` receives each shard's
    name and bytes); ``worker``: writes and stages ``shards`` only, recording them in a
    state file of its own, and commits nothing; ``commit``: the whole export, reusing
    every shard the workers staged (it writes any that is missing)."""

    mode: str  # "plan" | "worker" | "commit"
    shards: list[str] = field(default_factory=list)
    worker: int = 0
    planned: list[tuple[str, int]] = field(default_factory=list)


COMMIT_SPAN = "commit (staged files published, manifest)"
MAX_SHARD_WRITERS = 8  # each holds shard_file.BLOCKS blocks, a mapped window and a merge block: ~60 MB
WRITERS_ENV = "TUNE2SERVE_EXPORT_WRITERS"


def export_checkpoint(source: str, dest: str, *, base_model: str | None = None, checkpoint: str = "final",
                      dtype: str = "auto", max_shard_size: str | int = "5GB", progress: Progress | None = None,
                      upload_workers: int = 8, spans: Spans | None = None, part: Part | None = None,
                      pass_through: bool = False) -> ExportResult:
    """Exports SOURCE (a tuning output, a checkpoint, an adapter or a tuning job name) to
    DEST (local or gs://) as safetensors shards + index + config + tokenizer + manifest.

    ``spans``, when given, receives the seconds spent per stage (the benchmark's
    ``--profile``). ``pass_through`` (the pipeline's steps): a gs:// SOURCE that already
    is a deployable folder is returned as the export, nothing copied (``plan/passthrough.py``).

    Raises:
        UsageError: a flag does not parse.
        CheckpointError (MergeError, UnsafePickleError): the input is wrong; DEST untouched.
        SourceError / DestinationError: SOURCE cannot be read, DEST cannot be written or
            already holds a different export.
    """
    choice = CheckpointChoice.parse(checkpoint)
    max_bytes = parse_size(max_shard_size)
    writer_limit()  # TUNE2SERVE_EXPORT_WRITERS said wrong: a usage error before anything is read
    if dtype != "auto" and dtype not in DTYPES:
        output_dtype(dtype, {}, {})  # raises the UsageError
    src_folder, job = open_source(source)
    src_folder = src_folder.pinned(src_folder.list())  # the one listing of SOURCE; read at its generations from here
    if pass_through and (passed := passthrough.passed_through(source, dest, checkpoint=checkpoint, dtype=dtype,
                                                              max_shard_bytes=max_bytes, folder=src_folder)):
        return ExportResult(**passed)
    tuned = _open_checkpoint(src_folder, choice)
    sel = tuned.selection
    log_event(logger, "export.source", sel.explanation, source=describe_source(src_folder, job), source_kind=sel.source_kind)
    root = _Checkpoint(src_folder, _children(src_folder.list(), ""), sel) if sel.subdir else None
    options: LoraOptions | None = None
    base: _Checkpoint | None = None
    if sel.is_adapter:
        if "adapter_model.safetensors" not in tuned.files:  # a .bin adapter: read with torch, imported meanwhile
            import_torch_in_background(spans)
        options = LoraOptions.from_config(bounded_json.read_object(tuned.folder, ADAPTER_CONFIG), tuned.folder.join(ADAPTER_CONFIG))
        base = _open_base(base_model, options, tuned.folder.uri)
        log_event(logger, "export.base", f"merging the adapter into {base.folder.uri}", base_model=base.folder.uri)
    elif base_model:
        log_event(logger, "export.base_ignored", f"{tuned.folder.uri} holds full weights; --base-model is not used",
                  level=logging.WARNING)
    weights = base or tuned
    weight_names = _weight_names(weights.files)
    adapter_names = sorted(n for n in tuned.files if n.startswith("adapter_")) if sel.is_adapter else []
    dest_folder = open_folder(dest)
    digest = _digest({
        "tune2serve": package_version(), "source": tuned.folder.uri, "base": base.folder.uri if base else None,
        "inputs": fingerprints(weights.folder.list(), weight_names)
        + fingerprints(tuned.folder.list(), adapter_names + sorted(tuned.files & set(TOKENIZER_FILES))),
        "options": {"dtype": dtype, "max_shard_size": max_bytes, "checkpoint": str(choice)},
    })
    state = f"state-{part.worker}.json" if part is not None and part.mode == "worker" else "state.json"
    publisher = Publisher(dest_folder, digest, workers=upload_workers, state=state,
                          holder=fanout_holder(digest) if part is not None else None)
    existing = publisher.existing_manifest()
    if existing is not None:
        publisher.tidy()  # what a run killed after writing manifest.json left in staging
        publisher.close()
        log_event(logger, "export.noop", f"{dest_folder.uri} already holds this export; nothing to do", dest=dest_folder.uri)
        return _result(existing, dest_folder, sel, noop=True)
    publisher.claim()
    try:
        with tempfile.TemporaryDirectory(prefix="tune2serve-export-") as scratch:
            manifest = _execute(tuned, root, base, weights, weight_names, options, dest_folder, publisher, Path(scratch),
                                dtype, max_bytes, progress, str(choice), describe_source(src_folder, job), spans or Spans(),
                                part)
    except PromotionError:
        if part is not None and part.mode == "worker":
            publisher.close()  # the other workers' staged shards are not this worker's to delete
        else:
            publisher.abort()
        raise
    except BaseException:
        publisher.close(release=part is None)  # interrupted: staging stays for the rerun to reuse
        raise
    if manifest is None:  # a fan-out part: nothing is complete at DEST yet
        assert part is not None
        publisher.close()
        return ExportResult(ok=True, dest=dest_folder.uri, files=[], source=describe_source(src_folder, job),
                            source_kind=sel.source_kind, explanation=sel.explanation, noop=False, parameter_count=0,
                            bytes=sum(b for _, b in part.planned), dtype=dtype, checkpoint=str(choice))
    log_event(logger, "export.done", f"{dest_folder.uri} holds a complete export ({len(manifest.files)} files)",
              dest=dest_folder.uri, manifest_digest=manifest.digest())
    return _result(manifest, dest_folder, sel, noop=False)


def _execute(tuned: _Checkpoint, root: _Checkpoint | None, base: _Checkpoint | None, weights: _Checkpoint,
             weight_names: list[str], options: LoraOptions | None, dest: Folder, publisher: Publisher, scratch: Path,
             dtype: str, max_bytes: int, progress: Progress | None, checkpoint: str, source_text: str,
             spans: Spans, part: Part | None = None) -> Manifest | None:
    started = time.perf_counter()
    tensors, config = open_weights(weights.folder, weight_names, scratch / "weights")
    try:
        if options is None:
            check_full_weights(tensors.metas, weights.folder.uri)  # a PeftModel's state dict is not a model
        adapter: AdapterPlan | None = None
        if options is not None:
            adapter_local = tuned.folder.download_dir(sorted(n for n in tuned.files if n.startswith("adapter_")), scratch / "adapter")
            with spans.span("torch import (what the plan waited for)"):  # only an adapter with more than LoRA matrices
                if adapter_needs_torch(adapter_local, tuned.folder.uri):
                    import torch  # noqa: F401
            options, adapter_tensors = read_adapter(adapter_local, tuned.folder.uri)
            if config.get("quantization_config"):
                raise MergeError(f"{weights.folder.uri}: the base model is quantized; a LoRA cannot be merged into quantized "
                                 "weights — use the unquantized base as --base-model")
            disk_names = DiskNames(config)
            adapter_tensors, param_lora = split_param_lora(adapter_tensors)  # LoRA on fused MoE expert parameters
            adapter_tensors, token_rows = split_token_rows(adapter_tensors)  # PEFT trainable tokens
            adapter = plan_adapter(options, adapter_tensors, tensors.metas, tuned.folder.uri, disk_names.to_disk)
            adapter.experts = plan_param_lora(param_lora, options, disk_names, tensors.metas, tuned.folder.uri)
            apply_token_rows(token_rows, options.trainable_token_indices, adapter, tensors.metas, tensors.read,
                             disk_names.to_disk, tuned.folder.uri)
            untie_trained_embedding(adapter, tensors, config)  # the output layer kept the base weight in training
        plan = plan_output(tensors.metas, config, output_dtype(dtype, config, tensors.metas), adapter, tuned.folder.uri)
        shards = plan_shards(plan.tensors, max_bytes)
        places = [tuned] + ([root] if root else []) + ([base] if base else [])
        small, notes = _small_files(places, weights, config, plan, merging=adapter is not None)
        small[INDEX_NAME] = index_json(shards)
        for note in plan.notes + notes:
            log_event(logger, "export.note", note)

        spans.add("plan (headers, adapter, config, tokenizer)", time.perf_counter() - started)
        if part is not None and part.mode == "plan":
            part.planned = [(s.name, s.data_bytes) for s in shards]
            return None  # DEST stays claimed for the workers (same holder) until the lease ends
        if part is not None and part.mode == "worker":
            unknown = sorted(set(part.shards) - {s.name for s in shards})
            if unknown:
                raise UsageError(f"{dest.uri}: worker {part.worker} was given shard {unknown[0]}, which this export's plan "
                                 "does not have; the plan step and the workers must get the same inputs and options")
            shards = [s for s in shards if s.name in set(part.shards)]
        stream = TensorStream(tensors, adapter, DTYPES[plan.dtype], spans)
        if any(stream.needs_torch(t) for shard in shards for t in shard.tensors):
            import_torch_in_background(spans)  # imported while the tensors before the first that needs it are written
        try:
            todo = []
            for shard in shards:
                if publisher.reuse(shard.name) is None:
                    todo.append(shard)
                else:
                    log_event(logger, "export.shard_reused", f"reused {shard.name} from the interrupted run", file=shard.name)
                    if progress:
                        progress(shard.data_bytes)
            _write_shards(todo, stream, publisher, scratch / "out", spans, progress, _shard_writers(tensors, adapter, len(todo)))
        finally:
            stream.close()  # torch's thread count as it was
        log_event(logger, "export.paths", "bytes per write path", **stream.kinds)
        if part is not None and part.mode == "worker":
            publisher.wait()
            publisher.close()
            log_event(logger, "export.worker_done", f"worker {part.worker} staged {len(shards)} shards at {dest.uri}",
                      dest=dest.uri, worker=part.worker, shards=len(shards))
            return None
        for name, data in small.items():
            if publisher.reuse(name) is None:
                path = publisher.scratch_path(name, scratch / "out")
                publisher.stage(name, path, write_small(path, data, crc=publisher.records_crc32c))
    finally:
        tensors.close()
    started = time.perf_counter()
    publisher.wait()
    spans.add("small files and uploads wait", time.perf_counter() - started)
    manifest = Manifest(
        files=sorted(publisher.entries.values(), key=lambda e: e.name), source=source_text,
        base_model=base.folder.uri if base else None,
        extra={"export_digest": publisher.digest, "source_kind": tuned.selection.source_kind,
               "explanation": tuned.selection.explanation, "checkpoint": checkpoint, "dtype": plan.dtype,
               "parameter_count": plan.parameter_count, "merge": options.summary() if options else None,
               "notes": plan.notes + notes, "created_by": f"tune2serve {package_version()}"},
    )
    started = time.perf_counter()
    publisher.commit(manifest)  # gs://: a server-side copy of each staged file (see bench_export_gcs.py)
    spans.add(COMMIT_SPAN, time.perf_counter() - started)
    return manifest


def _shard_writers(tensors: CheckpointTensors, adapter: AdapterPlan | None, shards: int) -> int:
    """How many shards are written at once: one per core (at most ``MAX_SHARD_WRITERS``)
    when the base is local safetensors, whose reads are positioned and need no order.

    Why: a shard's sha256 is one sequential pass on one core (~1.5 GB/s here, OpenSSL with
    SHA-NI), so one shard at a time cannot go faster than that, however many cores
    merge; shards are independent files, so their hashes, merges and writes run side by
    side. A remote base is read ahead in file order through one pool of windows
    (``source/remote.py``), ``.bin`` files are read whole and fused-expert updates are
    made in the order the writer reaches them (``merge/moe.py``): those keep one writer."""
    if shards < 2 or (adapter is not None and adapter.experts is not None):
        return 1
    if any(type(f) is not SafetensorsFile for f in tensors.files.values()):
        return 1
    return max(1, min(shards, writer_limit()))


def writer_limit() -> int:
    """``TUNE2SERVE_EXPORT_WRITERS`` (1 to 64) where set — for a container whose CPU
    quota is below the cores it sees —, else one per core, at most ``MAX_SHARD_WRITERS``."""
    text = os.environ.get(WRITERS_ENV, "").strip()
    if not text:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(cores, MAX_SHARD_WRITERS)
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 64):
        raise UsageError(f"{WRITERS_ENV}={text!r}: expected a whole number of shard writers from 1 to 64")
    return int(text)


def _write_shards(todo: list[ShardPlan], stream: TensorStream, publisher: Publisher, scratch: Path, spans: Spans,
                  progress: Progress | None, writers: int) -> None:
    """Writes and stages each shard of ``todo``, ``writers`` at a time (each on a fork of
    ``stream``); the first failure stops the others at their next chunk and is raised
    once they have stopped, as is an interrupt. What the output holds does not depend on
    ``writers``: each shard's bytes are a function of the plan alone."""

    def write(shard: ShardPlan, shard_stream: TensorStream) -> None:
        path = publisher.scratch_path(shard.name, scratch)
        written = write_shard(path, shard, shard_stream, crc=publisher.records_crc32c, spans=spans,
                              fsync=publisher.writes_in_place)
        publisher.stage(shard.name, path, written)
        log_event(logger, "export.shard", f"wrote {shard.name}", file=shard.name, bytes=written.size)

    if writers <= 1:
        for shard in todo:
            write(shard, stream)
            if progress:
                progress(shard.data_bytes)
        return
    with ThreadPoolExecutor(max_workers=writers, thread_name_prefix="export-shard") as pool:
        futures = {pool.submit(write, shard, stream.fork()): shard for shard in todo}
        try:
            for future in as_completed(futures):
                future.result()
                if progress:
                    progress(futures[future].data_bytes)
        except BaseException:
            stream.stop.set()
            for future in futures:
                future.cancel()
            raise


def _result(manifest: Manifest, dest: Folder, sel: Selection, noop: bool) -> ExportResult:
    extra = manifest.extra
    return ExportResult(
        ok=True, dest=dest.uri, noop=noop,
        files=[{"name": e.name, "size": e.size, "sha256": e.sha256, **({"crc32c": e.crc32c} if e.crc32c else {})}
               for e in manifest.files],
        source=manifest.source or "", source_kind=str(extra.get("source_kind", sel.source_kind)),
        explanation=str(extra.get("explanation", sel.explanation)),
        parameter_count=int(extra.get("parameter_count", 0) or 0),
        bytes=sum(e.size for e in manifest.files), dtype=str(extra.get("dtype", "")),
        checkpoint=str(extra.get("checkpoint", "")), base_model=manifest.base_model,
        merge=extra.get("merge") if isinstance(extra.get("merge"), dict) else None,
        manifest_digest=manifest.digest(), notes=list(extra.get("notes") or []),
    )


__all__ = ["ExportResult", "Part", "export_checkpoint"]
