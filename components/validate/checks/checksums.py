"""--verify-checksums: every file against manifest.json (size and sha256).

The only check that reads file contents in full (every byte is hashed), so it is
opt-in. Local files are hashed in place; remote ones are streamed in 8 MiB ranged
reads, never stored.
"""

from __future__ import annotations

import hashlib

from tune2serve.components.checkpoint.manifest import MANIFEST_NAME, parse_manifest, sha256_file
from tune2serve.components.checkpoint.storage import Folder
from tune2serve.components.errors import CheckpointError
from tune2serve.components.validate.context import Checkpoint
from tune2serve.components.validate.findings import Finding, error, info, warning

CHUNK = 8 << 20


def check_checksums(ckpt: Checkpoint) -> list[Finding]:
    if not ckpt.options.verify_checksums:
        return []
    if not ckpt.sizes.get(MANIFEST_NAME):
        return [error("manifest-missing", f"--verify-checksums needs {MANIFEST_NAME}, which is missing or empty "
                                          "(tune2serve export writes it last)", MANIFEST_NAME)]
    try:
        manifest = parse_manifest(ckpt.folder.read_bytes(MANIFEST_NAME))
    except CheckpointError as e:
        return [error("manifest-invalid", str(e), MANIFEST_NAME)]
    found: list[Finding] = []
    listed = {e.name for e in manifest.files}
    for entry in manifest.files:
        if entry.name not in ckpt.sizes:
            found.append(error("checksum-file-missing", f"{MANIFEST_NAME} lists {entry.name}, which is missing", entry.name))
        elif ckpt.sizes[entry.name] != entry.size:
            found.append(error("checksum-size-mismatch", f"{entry.name} is {ckpt.sizes[entry.name]} bytes; "
                                                         f"{MANIFEST_NAME} says {entry.size}", entry.name))
        elif sha256_of(ckpt.folder, entry.name, entry.size) != entry.sha256:
            found.append(error("checksum-mismatch", f"{entry.name}: sha256 differs from {MANIFEST_NAME}; the file "
                                                    "changed or was corrupted after export", entry.name))
    for name in sorted(set(ckpt.sizes) - listed - {MANIFEST_NAME}):
        found.append(warning("manifest-unlisted-file", f"{name} is not listed in {MANIFEST_NAME}", name))
    if not found:
        found.append(info("checksums-verified", f"{len(manifest.files)} files match {MANIFEST_NAME} (size and sha256)",
                          MANIFEST_NAME))
    return found


def sha256_of(folder: Folder, name: str, size: int) -> str:
    local = folder.local_path(name)
    if local is not None:
        return sha256_file(local)
    h = hashlib.sha256()
    for start in range(0, size, CHUNK):
        h.update(folder.read_range(name, start, min(CHUNK, size - start)))
    return h.hexdigest()
