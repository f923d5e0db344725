"""``manifest.json``: every file of an export with its size and sha256 (and crc32c on
GCS). Written last by export, so its presence marks a complete export; read by validate
``--verify-checksums`` and by deploy, whose labels carry the manifest's own digest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.checkpoint.storage import Folder
from tune2serve.components.errors import CheckpointError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    size: int
    sha256: str
    crc32c: str | None = None


@dataclass
class Manifest:
    files: list[ManifestEntry] = field(default_factory=list)
    source: str | None = None
    base_model: str | None = None
    version: int = MANIFEST_VERSION
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        doc = {
            "version": self.version,
            "source": self.source,
            "base_model": self.base_model,
            "files": [{k: v for k, v in asdict(e).items() if v is not None} for e in self.files],
            **self.extra,
        }
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"

    def digest(self) -> str:
        """sha256 over the sorted (name, size, sha256) triples: identifies the export's
        content independent of where it lives or when it was written."""
        h = hashlib.sha256()
        for e in sorted(self.files, key=lambda e: e.name):
            h.update(f"{e.name}\0{e.size}\0{e.sha256}\n".encode())
        return h.hexdigest()


def parse_manifest(text: str | bytes, file: str = MANIFEST_NAME) -> Manifest:
    doc = bounded_json.load_object(text, file)
    try:
        files = [ManifestEntry(f["name"], int(f["size"]), str(f["sha256"]), f.get("crc32c")) for f in doc["files"]]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{file}: not a tune2serve manifest ({type(e).__name__}: {e})", file=file) from e
    known = {"version", "source", "base_model", "files"}
    return Manifest(
        files=files,
        source=doc.get("source"),
        base_model=doc.get("base_model"),
        version=int(doc.get("version", MANIFEST_VERSION)),
        extra={k: v for k, v in doc.items() if k not in known},
    )


def read_manifest(folder: Folder) -> Manifest | None:
    if not folder.has(MANIFEST_NAME):
        return None
    return parse_manifest(folder.read_bytes(MANIFEST_NAME))


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
