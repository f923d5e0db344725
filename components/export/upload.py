"""Publishing an export at DEST so that no reader ever sees half of one.

Protocol (local folders and gs:// alike):

1. Every file is first staged under ``DEST/_staging/`` (local: written there as
   ``NAME.partial`` and renamed when complete; GCS: written to a local scratch file,
   uploaded (resumable) to ``DEST/_staging/NAME`` while the next shard is written, and
   deleted once uploaded — at most ``max_pending`` shards wait, so local disk holds
   ~2 shards whatever the model size). After each file,
   ``_staging/state.json`` records its size, sha256 and crc32c together with the
   export's digest (a hash of the inputs' identities and the options).
2. When every file is staged, each is moved to its final name (local: ``os.replace``;
   GCS: a server-side copy), then ``manifest.json`` is written LAST, then ``_staging/``
   is removed. ``manifest.json`` present = a complete export; validate and deploy treat
   a DEST without it as incomplete.

A rerun after an interruption finds ``state.json`` with the same digest and reuses
every staged (or already moved) file whose checksum still matches: local files are
re-hashed, GCS objects compared by the crc32c GCS computed. A rerun of a finished
export finds ``manifest.json`` with the same digest: nothing to do (``noop``). A
``manifest.json`` with another digest, or files that belong to no export, make the run
stop with exit 1 before writing anything. On bad input discovered while writing,
everything this run staged is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tune2serve.components.checkpoint.manifest import MANIFEST_NAME, Manifest, ManifestEntry, parse_manifest
from tune2serve.components.checkpoint.storage import Folder, GcsFolder, LocalFolder
from tune2serve.components.errors import CheckpointError, DestinationError, PromotionError
from tune2serve.components.export.writer import Written, hash_file

STAGING = "_staging"
STATE = "state.json"


class Publisher:
    """Stages, commits or aborts one export at ``dest``."""

    def __init__(self, dest: Folder, digest: str, workers: int = 8, max_pending: int = 1, state: str = STATE) -> None:
        self.dest = dest
        self.digest = digest
        self.state_name = state  # a fan-out worker records its files in a state file of its own
        self.staging = dest.child(STAGING)
        self.is_gcs = isinstance(dest, GcsFolder)
        self.entries: dict[str, ManifestEntry] = {}
        self.previous: dict[str, ManifestEntry] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers)) if self.is_gcs else None
        self._pending: list[Future[None]] = []
        self._slots = threading.Semaphore(max(1, max_pending))  # big files waiting for upload
        self._created_dest = isinstance(dest, LocalFolder) and not dest.root.exists()

    # -- before writing ---------------------------------------------------------
    def existing_manifest(self) -> Manifest | None:
        """The manifest of a complete export already at DEST, when it is this very
        export (same digest, every file present with its size); raises
        ``DestinationError`` when DEST holds anything else."""
        listing = self._listing()
        sizes = {o.name: o.size for o in listing}
        if MANIFEST_NAME in sizes:
            try:
                manifest = parse_manifest(self.dest.read_bytes(MANIFEST_NAME))
            except CheckpointError as e:
                raise DestinationError(f"{self.dest.uri}: holds an unreadable manifest.json ({e}); choose another DEST or delete it") from e
            same = manifest.extra.get("export_digest") == self.digest and all(sizes.get(e.name) == e.size for e in manifest.files)
            if same:
                return manifest
            raise DestinationError(
                f"{self.dest.uri}: already holds a different export (manifest.json from {manifest.source}); "
                "choose another DEST or delete that one first"
            )
        state = self._read_state([n[len(STAGING) + 1:] for n in sizes if n.startswith(f"{STAGING}/")])
        known = set(state.get("files", {})) if state else set()
        stray = [n for n in sizes if not n.startswith(f"{STAGING}/") and n not in known]
        if stray:
            raise DestinationError(
                f"{self.dest.uri}: is not empty and holds no tune2serve export (found {stray[0]}); "
                "choose an empty or new DEST, or delete what is there"
            )
        if state and state.get("digest") == self.digest:
            self.previous = {n: ManifestEntry(n, int(e["size"]), e["sha256"], e.get("crc32c")) for n, e in state["files"].items()}
        elif state or any(n.startswith(f"{STAGING}/") for n in sizes):
            self._delete_staging([n for n in sizes if n.startswith(f"{STAGING}/")])  # a stale, unfinished other export
        return None

    def probe(self) -> None:
        """Fails early, before any work, when DEST cannot be written."""
        try:
            self.staging.write_bytes(".probe", b"")
            self.staging.delete(".probe")
        except PromotionError as e:
            self.abort()
            raise DestinationError(f"{self.dest.uri}: cannot be written ({e}); choose a DEST you can write to") from e

    # -- staging ------------------------------------------------------------------
    def reuse(self, name: str) -> ManifestEntry | None:
        """The entry of a file a previous interrupted run staged, when it checks out."""
        entry = self.previous.get(name)
        if entry is None:
            return None
        if self.is_gcs:
            ok = any(self._gcs_crc(folder, name) == (entry.size, entry.crc32c) for folder in (self.staging, self.dest))
        else:
            ok = False
            for path in (self.staging.local_path(name), self.dest.local_path(name)):
                if path is not None and path.is_file() and path.stat().st_size == entry.size:
                    ok = hash_file(path).sha256 == entry.sha256
                    if ok:
                        if path != self.staging.local_path(name):
                            Path(self.staging.local_path(name) or "").parent.mkdir(parents=True, exist_ok=True)
                            os.replace(path, self.staging.local_path(name))  # type: ignore[arg-type]
                        break
        if ok:
            self._record(name, entry)
            return entry
        return None

    def _gcs_crc(self, folder: Folder, name: str) -> tuple[int, str | None]:
        assert isinstance(folder, GcsFolder)
        blob = folder.bucket.get_blob(f"{folder.prefix}/{name}" if folder.prefix else name)
        return (int(blob.size or 0), blob.crc32c) if blob is not None else (-1, None)

    def scratch_path(self, name: str, scratch: Path) -> Path:
        """Where the writer puts ``name``: in DEST's staging area for a local DEST (so
        staging costs a rename, not a copy), else in local scratch space."""
        local = self.staging.local_path(name)
        path = (local.parent / f"{local.name}.partial") if local is not None else scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def stage(self, name: str, path: Path, written: Written) -> None:
        """Moves a finished file into staging (GCS: uploads it in the background)."""
        entry = ManifestEntry(name, written.size, written.sha256, written.crc32c if self.is_gcs else None)
        if not self.is_gcs:
            os.replace(path, self.staging.local_path(name))  # type: ignore[arg-type]
            self._record(name, entry)
            return
        assert self._pool is not None
        bounded = name.endswith(".safetensors")  # shards; the small files upload without waiting
        if bounded:
            self._slots.acquire()  # bounds the scratch shards on local disk

        def upload() -> None:
            try:
                self.staging.upload_file(name, path)
                path.unlink(missing_ok=True)
                self._record(name, entry)
            finally:
                if bounded:
                    self._slots.release()

        self._pending.append(self._pool.submit(upload))

    def _record(self, name: str, entry: ManifestEntry) -> None:
        with self._lock:
            self.entries[name] = entry
            state = {"digest": self.digest, "files": {n: {"size": e.size, "sha256": e.sha256, "crc32c": e.crc32c}
                                                      for n, e in sorted(self.entries.items())}}
            self.staging.write_bytes(self.state_name, json.dumps(state, indent=1).encode())

    def mark(self) -> None:
        """Claims staging for this export (a state file with its digest and no files):
        the fan-out's plan step does this before any worker starts, so that no worker
        mistakes another's staged shards for a stale export and deletes them."""
        self.staging.write_bytes(STATE, json.dumps({"digest": self.digest, "files": {}}, indent=1).encode())

    def wait(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()

    # -- the end ------------------------------------------------------------------
    def commit(self, manifest: Manifest) -> None:
        """Moves staged files to their names, writes manifest.json last, drops staging."""
        self.wait()
        names = [e.name for e in manifest.files]
        if self.is_gcs:
            assert isinstance(self.dest, GcsFolder) and isinstance(self.staging, GcsFolder) and self._pool is not None
            bucket = self.dest.bucket
            key = (lambda f, n: f"{f.prefix}/{n}" if f.prefix else n)
            list(self._pool.map(lambda n: bucket.copy_blob(bucket.blob(key(self.staging, n)), bucket, key(self.dest, n)), names))
        else:
            for n in names:
                src, dst = self.staging.local_path(n), self.dest.local_path(n)
                assert src is not None and dst is not None
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        self.dest.write_bytes(MANIFEST_NAME, manifest.to_json().encode())
        self._sync_local()
        self._delete_staging()
        self.close()

    def _sync_local(self) -> None:
        """Local DEST: makes manifest.json and the renames durable (the shards were
        fsynced as they were written), so a crash cannot leave a manifest naming data
        that never reached the disk."""
        path = self.dest.local_path(MANIFEST_NAME)
        if path is None:
            return
        for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))):
            fd = os.open(target, flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def abort(self) -> None:
        """Removes everything this export staged; a local DEST this run created goes too."""
        for future in self._pending:
            future.cancel()
        try:
            self.wait()
        except Exception:  # an upload that failed is being thrown away anyway
            pass
        self._delete_staging()
        if self._created_dest and isinstance(self.dest, LocalFolder) and self.dest.root.is_dir() and not any(self.dest.root.iterdir()):
            self.dest.root.rmdir()
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # -- helpers ------------------------------------------------------------------
    def _listing(self) -> list:  # type: ignore[type-arg]
        try:
            return self.dest.list() if self.dest.exists() else []
        except PromotionError as e:
            if isinstance(self.dest, LocalFolder) and self.dest.root.exists() and not self.dest.root.is_dir():
                raise DestinationError(f"{self.dest.uri}: is a file, not a folder; choose another DEST") from e
            raise DestinationError(f"{self.dest.uri}: cannot be listed ({e}); check the path and your access") from e

    def _read_state(self, staged: list[str]) -> dict | None:  # type: ignore[type-arg]
        """The staging state: ``state.json`` and each fan-out worker's ``state-*.json``,
        merged; ``{"digest": None}`` when they disagree (a stale mix: start over)."""
        merged: dict = {"digest": None, "files": {}}  # type: ignore[type-arg]
        found = False
        for name in sorted(n for n in staged if n == STATE or (n.startswith("state-") and n.endswith(".json"))):
            try:
                state = json.loads(self.staging.read_bytes(name))
            except (PromotionError, ValueError):
                continue
            if not isinstance(state, dict) or not isinstance(state.get("files"), dict):
                continue
            if found and state.get("digest") != merged["digest"]:
                return {"digest": None, "files": {}}
            found = True
            merged["digest"] = state.get("digest")
            merged["files"].update(state["files"])
        return merged if found else None

    def _delete_staging(self, names: list[str] | None = None) -> None:
        if isinstance(self.staging, LocalFolder):
            shutil.rmtree(self.staging.root, ignore_errors=True)
            return
        try:
            names = names if names is not None else [f"{STAGING}/{o.name}" for o in self.staging.list()]
        except PromotionError:
            names = []
        for n in names:
            self.dest.delete(n)
