"""Where the export reads from: a local path, ``gs://bucket/prefix``, or a Vertex AI
tuning job resource name resolved to the job's output URI.

Also what the rest of the export needs from a source folder: fingerprints (cheap
identities of the input files, from the listing, so a rerun can tell an identical export
without reading any weights), the weights (``open_weights``: local files mapped in
place; safetensors on GCS read in place by ranged reads, ``remote``, so a gs:// base
never lands on local disk), and a local copy of small remote files (the adapter, and
``.bin`` weights, which must be scanned whole before loading).

Each source folder is listed once per run and read as that listing saw it
(``Folder.pinned``): on GCS every read names the generation listed, so an object
replaced while the export runs ends the export naming it ("source changed") instead of
mixing its old and new bytes into one export. Everything here goes through the storage
layer (``checkpoint/storage.py``); nothing asks which store a folder is on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tune2serve.components.checkpoint.storage import Folder, ObjectInfo, open_folder
from tune2serve.components.checkpoint.tensor_reader import BinFile, CheckpointTensors, SafetensorsFile
from tune2serve.components.errors import CheckpointError, SourceNotFoundError, UsageError

TUNING_JOB = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/tuningJobs/(?P<job>[^/]+)$")


@dataclass(frozen=True)
class TuningJobName:
    project: str
    location: str
    job: str

    @classmethod
    def parse(cls, text: str) -> TuningJobName | None:
        """The parts of ``projects/P/locations/L/tuningJobs/ID``, or None for anything else."""
        match = TUNING_JOB.match(text.strip())
        return cls(**match.groupdict()) if match else None

    def __str__(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/tuningJobs/{self.job}"


def resolve_tuning_job(name: TuningJobName, timeout_s: float = 30.0) -> str:
    """The output URI of a Vertex AI tuning job, asked through the SDK's
    ``GenAiTuningServiceClient`` (the local stack when TUNE2SERVE_VERTEX_API_ENDPOINT is
    set). Raises a ``VertexError`` when Vertex cannot be reached or answers an error."""
    from google.cloud.aiplatform_v1beta1 import GenAiTuningServiceClient

    from tune2serve.components.vertex.clients import credentials, target
    from tune2serve.components.vertex.errors import translate_api_error

    vertex = target(name.project, name.location)
    endpoint = vertex.api_endpoint or f"{name.location}-aiplatform.googleapis.com"
    try:
        client = GenAiTuningServiceClient(
            client_options={"api_endpoint": endpoint}, transport="rest", credentials=credentials(vertex)
        )
        job = client.get_tuning_job(name=str(name), timeout=timeout_s)
    except Exception as e:  # google.api_core errors and transport errors alike, translated once
        raise translate_api_error(e, resource_name=str(name)) from e
    uri = str(getattr(job, "output_uri", "") or "")
    if not uri:
        raise CheckpointError(
            f"{name}: the tuning job has no output_uri yet (state {getattr(job, 'state', '?')!s}); "
            "wait for it to succeed, or pass its output folder as SOURCE"
        )
    return uri


def open_source(text: str) -> tuple[Folder, str | None]:
    """The folder to read and, for a tuning job, the job's name (for the explanation)."""
    if not text:
        raise UsageError("SOURCE is empty; give a local folder, gs://BUCKET/PREFIX or projects/P/locations/L/tuningJobs/ID")
    job = TuningJobName.parse(text)
    if job is not None:
        return open_folder(resolve_tuning_job(job)), str(job)
    folder = open_folder(text)
    root = folder.local_root()
    if root is not None and not root.exists():
        raise SourceNotFoundError(f"{folder.uri}: no such folder; check the SOURCE path")
    if root is not None and not root.is_dir():
        raise CheckpointError(f"{folder.uri}: is a file; SOURCE must be a folder (the one holding it)")
    return folder, None


def fingerprints(listing: list[ObjectInfo], names: Iterable[str]) -> list[list[object]]:
    """[name, size, identity] per file, from the folder's one listing: the crc32c a GCS
    listing gives (content: the same bytes uploaded again are the same input), else the
    local file's modification time. Changes whenever the content is replaced."""
    listed = {o.name: o for o in listing}
    return [[n, listed[n].size, listed[n].crc32c or listed[n].updated] for n in sorted(set(names)) if n in listed]


def open_weights(folder: Folder, names: list[str], scratch: Path) -> tuple[CheckpointTensors, dict[str, object]]:
    """The weights and ``config.json`` of a checkpoint folder. Local: mapped in place.
    GCS: safetensors read by range where they lie (``remote.RemoteSafetensorsFile``);
    ``.bin`` files downloaded to ``scratch`` one by one (a pickle is scanned whole)."""
    from tune2serve.components.checkpoint import bounded_json
    from tune2serve.components.export.source.remote import RemoteSafetensorsFile

    root = folder.local_root()
    if root is not None:  # on local disk: memory-mapped in place
        tensors = CheckpointTensors.from_folder(folder, folder.uri, lambda name: SafetensorsFile(root / name, name)
                                                if name.endswith(".safetensors") else BinFile(root / name, name))
        return tensors, bounded_json.read_object(folder, "config.json")
    config = bounded_json.read_object(folder, "config.json")
    scratch.mkdir(parents=True, exist_ok=True)

    def open_file(name: str) -> RemoteSafetensorsFile | BinFile:
        if name.endswith(".safetensors"):
            return RemoteSafetensorsFile(folder, name)
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.fetch_to(name, target)
        return BinFile(target, name)

    return CheckpointTensors.from_folder(folder, folder.uri, open_file), config


def describe_source(folder: Folder, job: str | None) -> str:
    return f"{job} (output {folder.uri})" if job else folder.uri
