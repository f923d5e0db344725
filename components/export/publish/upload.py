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

Only what this tool provably wrote is ever deleted or overwritten. ``_staging/`` is
claimed by a state file carrying ``"writer": "tune2serve-export"`` before anything is
staged; a file in ``_staging/`` that no such state file accounts for (a user's own
file, a state file without the claim) stops the run with nothing deleted, and so does
a file at DEST that a state file names but whose checksum does not match the record,
or that belongs to another (different digest) unfinished export.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.checkpoint.manifest import MANIFEST_NAME, Manifest, ManifestEntry, parse_manifest
from tune2serve.components.checkpoint.storage import Folder, GcsFolder, LocalFolder
from tune2serve.components.errors import CheckpointError, DestinationError, PromotionError
from tune2serve.components.export.publish.writer import Written, hash_file

STAGING = "_staging"
STATE = "state.json"
WRITER = "tune2serve-export"  # the claim in every state file: staging this tool created


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
        self._claimed: set[str] = set()  # state files (with our claim) found in staging
        self._known: set[str] = set()    # the files those state files record

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
        staged = [n[len(STAGING) + 1:] for n in sizes if n.startswith(f"{STAGING}/")]
        state = self._read_state(staged)
        known = set(state.get("files", {})) if state else set()
        foreign = [n for n in staged if not self._ours(n)]
        if foreign:
            raise DestinationError(
                f"{self.dest.join(STAGING + '/' + foreign[0])}: is in the staging folder but was not written by "
                f"tune2serve export; nothing was deleted. Move it out of {STAGING}/ or choose another DEST")
        stray = [n for n in sizes if not n.startswith(f"{STAGING}/") and n not in known]
        if stray:
            raise DestinationError(
                f"{self.dest.uri}: is not empty and holds no tune2serve export (found {stray[0]}); "
                "choose an empty or new DEST, or delete what is there"
            )
        moved = [n for n in sizes if not n.startswith(f"{STAGING}/") and n in known]
        if moved and (state is None or state.get("digest") != self.digest):
            raise DestinationError(
                f"{self.dest.uri}: holds {moved[0]} from another, unfinished export; nothing was deleted. "
                "Rerun that export to finish it, or choose another DEST")
        for n in moved:
            entry = state["files"][n]  # type: ignore[index]
            if not self._matches(n, entry):
                raise DestinationError(
                    f"{self.dest.join(n)}: is not the file the staging record describes (size or checksum differ); "
                    "it was not written by this export and nothing was deleted. Choose another DEST or remove it")
        if state and state.get("digest") == self.digest:
            self.previous = {n: ManifestEntry(n, int(e["size"]), e["sha256"], e.get("crc32c")) for n, e in state["files"].items()}
        elif state or any(n.startswith(f"{STAGING}/") for n in sizes):
            self._delete_staging([n for n in sizes if n.startswith(f"{STAGING}/")])  # a stale, unfinished other export
        return None

    def probe(self) -> None:
        """Fails early, before any work, when DEST cannot be written; claims staging
        (a state file with this tool's mark) before anything else is written there."""
        try:
            if self.state_name not in self._claimed:
                self.staging.write_bytes(self.state_name, self._state_json({}))
                self._claimed.add(self.state_name)
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
            self.staging.write_bytes(self.state_name, self._state_json(self.entries))
            self._claimed.add(self.state_name)
            self._known.add(name)

    def _state_json(self, entries: dict[str, ManifestEntry]) -> bytes:
        state = {"writer": WRITER, "digest": self.digest,
                 "files": {n: {"size": e.size, "sha256": e.sha256, "crc32c": e.crc32c} for n, e in sorted(entries.items())}}
        return json.dumps(state, indent=1).encode()

    def mark(self) -> None:
        """Claims staging for this export (a state file with its digest and no files):
        the fan-out's plan step does this before any worker starts, so that no worker
        mistakes another's staged shards for a stale export and deletes them."""
        self.staging.write_bytes(STATE, self._state_json({}))
        self._claimed.add(STATE)

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
                state = bounded_json.read_json(self.staging, name)
            except (PromotionError, ValueError):
                continue
            if not (isinstance(state, dict) and state.get("writer") == WRITER and isinstance(state.get("files"), dict)
                    and all(isinstance(k, str) and isinstance(v, dict) for k, v in state["files"].items())):
                continue  # not our claim: the file is foreign, and staging with it is not ours to touch
            self._claimed.add(name)
            self._known.update(state["files"])
            if found and state.get("digest") != merged["digest"]:
                return {"digest": None, "files": {}}
            found = True
            merged["digest"] = state.get("digest")
            merged["files"].update(state["files"])
        return merged if found else None

    def _ours(self, name: str) -> bool:
        """Whether a file in staging is provably this tool's: a claimed state file, a
        file a claimed state records, or (only under a claim) a writer's ``.partial``
        or the write probe."""
        if name in self._claimed or name in self._known or name in self.entries:
            return True
        base = name.rsplit("/", 1)[-1]
        return bool(self._claimed) and (base == ".probe" or base.endswith(".partial"))

    def _matches(self, name: str, entry: dict) -> bool:  # type: ignore[type-arg]
        """A file at DEST is the one a state file records (local: sha256; GCS: crc32c)."""
        try:
            if self.is_gcs:
                return self._gcs_crc(self.dest, name) == (int(entry["size"]), entry.get("crc32c"))
            path = self.dest.local_path(name)
            return (path is not None and path.is_file() and path.stat().st_size == int(entry["size"])
                    and hash_file(path).sha256 == entry.get("sha256"))
        except (KeyError, TypeError, ValueError, OSError):
            return False

    def _delete_staging(self, names: list[str] | None = None) -> None:
        """Deletes what this tool wrote in staging, nothing else: a file there that no
        claim accounts for stays (and so does the folder holding it)."""
        try:
            staged = [o.name for o in self.staging.list()] if self.staging.exists() else []
        except PromotionError:
            staged = [n[len(STAGING) + 1:] for n in names or []]
        for n in sorted(staged, key=lambda n: n in self._claimed):  # state files last: a crash keeps the claim
            if self._ours(n):
                self.staging.delete(n)
        if isinstance(self.staging, LocalFolder) and self.staging.root.is_dir():
            for d in sorted((p for p in self.staging.root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                if not any(d.iterdir()):
                    d.rmdir()
            if not any(self.staging.root.iterdir()):
                self.staging.root.rmdir()
