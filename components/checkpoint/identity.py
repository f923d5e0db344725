"""What a folder holds, as one digest: deploy's idempotence key.

Two sources, because deploy accepts any folder that validates, not only our exports:

* ``manifest``: a tune2serve export. Its ``manifest.json`` lists every file with size and
  sha256; the key is the manifest's own digest (content, independent of where the
  export lives or when it was written). The listing must agree with it: a file the
  manifest names that is missing, or has another size or crc32c, means the export was
  damaged after it was written (``check_listing``).
* ``listing``: any other folder (uploaded with ``gcloud storage``, ``gsutil`` or the
  storage client). The key is sha256 over each object's name, size and the crc32c that
  the GCS listing returns anyway, so nothing is read or downloaded. crc32c, not the
  generation, so re-uploading the same bytes is still the same folder (a rerun reuses
  the deployment instead of paying for a second one); the generation is used only for an
  object GCS gives no crc32c for. Every object counts, README and all: rewriting any one
  of them makes a new key, so a changed folder gets a new Model, never a stale one.
  crc32c is 32 bits: two different contents of the same name and size collide with
  odds of 1 in 4e9 per rewrite, acceptable for a reuse key (validate still checks what
  is deployed); export's sha256 manifest is the stronger guarantee.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tune2serve.components.checkpoint.manifest import MANIFEST_NAME, Manifest, read_manifest
from tune2serve.components.checkpoint.storage import Folder, ObjectInfo
from tune2serve.components.errors import CheckpointError

MANIFEST = "manifest"
LISTING = "listing"


@dataclass(frozen=True)
class FolderIdentity:
    digest: str  # 64 hex characters
    basis: str  # MANIFEST | LISTING
    files: int
    manifest: Manifest | None = None


def listing_digest(objects: list[ObjectInfo]) -> str:
    """sha256 over the sorted (name, size, crc32c or generation) of every object.

    Raises:
        CheckpointError: an object has neither (not a GCS listing: local folders have no
            content identity in their listing).
    """
    h = hashlib.sha256()
    for o in sorted(objects, key=lambda o: o.name):
        if o.crc32c:
            mark = f"crc32c:{o.crc32c}"
        elif o.generation:
            mark = f"generation:{o.generation}"
        else:
            raise CheckpointError(f"{o.name}: the listing gives no crc32c or generation for it, so the folder's "
                                  "content cannot be identified without reading it", file=o.name)
        h.update(f"{o.name}\0{o.size}\0{mark}\n".encode())
    return h.hexdigest()


def check_listing(manifest: Manifest, objects: list[ObjectInfo], folder_uri: str) -> None:
    """The export is still what its manifest says: every listed file present, with its
    size, and its crc32c where both sides have one (GCS exports record it).

    Raises:
        CheckpointError: the first file that differs, named.
    """
    found = {o.name: o for o in objects}
    for entry in manifest.files:
        obj = found.get(entry.name)
        if obj is None:
            problem = "is missing"
        elif obj.size != entry.size:
            problem = f"is {obj.size} bytes, the manifest says {entry.size}"
        elif entry.crc32c and obj.crc32c and entry.crc32c != obj.crc32c:
            problem = f"has crc32c {obj.crc32c}, the manifest says {entry.crc32c}"
        else:
            continue
        raise CheckpointError(f"{folder_uri}/{entry.name}: {problem}: the export was changed or damaged after "
                              f"it was written; rerun 'tune2serve export' to this destination", file=entry.name)


def folder_identity(folder: Folder, objects: list[ObjectInfo] | None = None) -> FolderIdentity:
    """The folder's identity from its manifest when it has one, else from its listing
    (``objects``: a listing of ``folder`` the caller already holds, so validate and deploy
    identify exactly the objects they read; None: list it now).

    Raises:
        CheckpointError: the manifest does not parse or disagrees with the listing, or
            (no manifest) the listing carries no content identity.
        SourceNotFoundError: the folder is empty.
    """
    objects = folder.list() if objects is None else objects
    manifest = read_manifest(folder) if any(o.name == MANIFEST_NAME for o in objects) else None
    if manifest is not None:
        check_listing(manifest, objects, folder.uri)
        return FolderIdentity(manifest.digest(), MANIFEST, len(manifest.files), manifest)
    return FolderIdentity(listing_digest(objects), LISTING, len(objects))
