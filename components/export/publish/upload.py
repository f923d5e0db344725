"""Publishing an export at DEST so that no reader ever sees half of one, and no two
exports ever mix at one DEST.

One protocol for local folders and gs://, built on the storage layer's conditional
writes (``Folder.write_bytes(..., if_generation_match=)``: a GCS generation
precondition; on local disk a directory lock and ``O_TMPFILE`` + ``link``):

1. **The claim.** ``DEST/_staging/state.json`` is both the export's claim on DEST and its
   record: the export's identity digest (its inputs' identities + options), who holds it
   (host, pid, run), a lease of ``LEASE_S`` seconds (``TUNE2SERVE_EXPORT_LEASE_S``), and
   every file staged so far. It is created only if absent, and every later write of it is
   conditional on the generation last written, so exactly one writer holds it; a
   heartbeat rewrites it every quarter lease while the export runs. Before anything is
   written, an export meets one of:

   * no claim: it creates one;
   * a claim of the **same** export (a rerun): taken over at once, its records kept, the
     export resumes;
   * a claim of **another** export whose lease is live: exit 1 naming that claim (export,
     holder, when its lease ends); nothing is touched;
   * a claim of another export whose lease ran out (not renewed for a whole lease, judged
     by the store's update time; or released by an interrupted run): taken over
     (conditionally: of two takers one wins), then that export's staging is removed.

   A writer whose conditional write fails to another holder has lost DEST: it stops
   (exit 1) and deletes nothing — what is staged is the new holder's to keep or remove.
2. **Staging.** Each file is recorded as *pending* (its name and checksums) in the state
   before its upload starts, then staged under ``_staging/`` (local: written there as
   ``NAME.partial`` and renamed; GCS: written to local scratch and uploaded while the next
   shard is written, at most ``max_pending`` waiting, so local disk holds ~2 shards), then
   recorded with the generation that landed, after checking its size and crc32c.
3. **Commit.** Each staged file is published under its name (GCS: a server-side copy
   conditional on the staged generation and on the name not existing yet; local: a
   link + unlink, which never replaces) and what landed is checked against the record
   (GCS: size and crc32c; local: the very file that was staged). DEST is then read once
   more: every file must be exactly the object just placed. The lease is renewed, so no
   other export can take DEST for a whole lease, and ``manifest.json`` is created LAST,
   only if absent; then ``_staging/`` is removed, the claim last. ``manifest.json``
   present = a complete export; validate and deploy treat a DEST without it as
   incomplete. So ``manifest.json`` never describes bytes other than those at DEST.

A rerun after an interruption at any instant takes its own claim over and checks every
recorded file — pending or staged, in staging or already at its final name — by crc32c
(GCS, from the store's metadata) or sha256 (local): a match is kept, anything else the
record names is deleted and written again. A rerun of a finished export finds
``manifest.json`` with the same digest: nothing to do (``noop``), and what a run killed
after writing it left in staging is removed. A ``manifest.json`` with another digest, or
files that belong to no export, stop the run with exit 1 before anything is written. On
bad input discovered while writing, everything this run staged is deleted.

Only what this tool provably wrote is ever deleted or overwritten: a file in
``_staging/`` that no state file carrying ``"writer": "tune2serve-export"`` accounts for
(a user's own file, a state file without the mark) stops the run with nothing deleted,
and so does a file at DEST that a state file names but whose checksum does not match
the record, or that belongs to another (different digest) unfinished export.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune2serve.components.checkpoint import bounded_json
from tune2serve.components.checkpoint.manifest import MANIFEST_NAME, Manifest, ManifestEntry, parse_manifest
from tune2serve.components.checkpoint.storage import Folder, ObjectInfo
from tune2serve.components.errors import (
    CheckpointError, ConcurrentWriteError, DestinationError, PromotionError, RefusalFromListing, SourceNotFoundError,
    StaleListingError, UsageError,
)
from tune2serve.components.export.publish.writer import Written
from tune2serve.components.logs import get_logger, log_event

STAGING = "_staging"
STATE = "state.json"  # the claim, and the record of the files staged (a fan-out worker adds state-K.json)
WRITER = "tune2serve-export"  # the mark in every state file: staging this tool created
LEASE_S = 120.0
LEASE_ENV = "TUNE2SERVE_EXPORT_LEASE_S"

logger = get_logger("export")


def lease_seconds() -> float:
    """The claim's lease: ``LEASE_S`` unless ``TUNE2SERVE_EXPORT_LEASE_S`` says otherwise
    (0.5 s to a day). Long enough that a heartbeat every quarter of it survives a slow
    request; short enough that an export killed for good frees DEST for another within
    minutes (a rerun of the same export never waits)."""
    text = os.environ.get(LEASE_ENV, "").strip()
    if not text:
        return LEASE_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.5 <= value <= 86400):
        raise UsageError(f"{LEASE_ENV}={text!r}: expected a number of seconds from 0.5 to 86400")
    return value


def fanout_holder(digest: str) -> str:
    """The holder every step of one fanned-out export writes as (plan, workers, commit):
    they are one writer spread over machines, each staging its own shards."""
    return f"fan-out of export {digest[:16]}"


@dataclass
class _State:
    """A state file of this tool, as read: whose export, who holds it, its lease."""

    name: str
    digest: str | None
    holder: str
    lease_s: float | None  # None: written before leases existed, so never live
    released: bool
    generation: int
    updated: float | None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    doc: dict[str, Any] = field(default_factory=dict)

    def expired(self) -> bool:
        """No writer holds it any more: released, lease-less, or not renewed for a whole
        lease by the store's clock (a writer that stalls that long has lost DEST). One
        rewritten while it was being read (no update time for the generation read) is
        as live as can be."""
        if self.released or self.lease_s is None:
            return True
        return self.updated is not None and time.time() - self.updated > self.lease_s

    def describe(self) -> str:
        if self.lease_s is None:
            return f"export {str(self.digest)[:12]} by {self.holder or 'an earlier version'} (no lease)"
        left = self.lease_s - (time.time() - self.updated) if self.updated is not None else self.lease_s
        return (f"export {str(self.digest)[:12]} by {self.holder or '?'}, lease of {self.lease_s:g} s "
                + (f"ending in {max(0.0, left):.0f} s" if left > 0 and not self.released else "ended"))


class Publisher:
    """Claims DEST, stages, commits or aborts one export there (see the module docstring).

    One implementation for every store: the storage layer (``Folder``) carries the
    differences — conditional writes, what a store's metadata says of an object, rename
    versus server-side copy."""

    def __init__(self, dest: Folder, digest: str, workers: int = 8, max_pending: int = 1, state: str = STATE,
                 holder: str | None = None) -> None:
        self.dest = dest
        self.digest = digest
        self.state_name = state  # a fan-out worker records its files in a state file of its own
        self.staging = dest.child(STAGING)
        self._run = uuid.uuid4().hex[:8]
        self.holder = holder or f"{socket.gethostname()} pid {os.getpid()} run {self._run}"
        self.lease_s = lease_seconds()
        self.records_crc32c = dest.computes_crc32c()  # the writer computes crc32c where the store keeps one
        self.writes_in_place = dest.local_root() is not None  # shards are written inside DEST (so fsynced)
        self.entries: dict[str, ManifestEntry] = {}   # staged or published and checked: the manifest's files
        self.previous: dict[str, ManifestEntry] = {}  # what an interrupted run of this export recorded
        self._records: dict[str, dict[str, Any]] = {}  # this run's state file's "files"
        self._staged: dict[str, ObjectInfo] = {}       # what landed in staging
        self._published: dict[str, ObjectInfo] = {}    # already at their final names, checked
        self._listing: dict[str, ObjectInfo] = {}      # DEST as listed once at the start
        self._states: dict[str, _State] = {}           # the state files found (ours: with the mark)
        self._generation: dict[str, int] = {}          # each state file we write, as last written
        self._stale: list[str] = []                    # another export's staged files, removed once DEST is ours
        self._held = False
        self._lost: str | None = None
        self._renewed = 0.0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="export-upload")
        self._pending: list[Future[None]] = []
        self._slots = threading.Semaphore(max(1, max_pending))  # big files waiting for upload
        root = dest.local_root()
        self._created_dest = root is not None and not root.exists()
        self._claimed: set[str] = set()  # state files (with our mark) found in staging
        self._known: set[str] = set()    # the files those state files record

    # -- before writing ---------------------------------------------------------
    def existing_manifest(self) -> Manifest | None:
        """The manifest of a complete export already at DEST, when it is this very
        export (same digest, every file present with its size); raises
        ``DestinationError`` when DEST holds anything else — another export's manifest,
        files of no export, or the staging of another export whose claim is live.
        DEST is listed again when a state file it listed is gone by the time it is read,
        or when a refusal's listing is not what DEST holds a moment later (another export
        finished meanwhile, and a listing is no snapshot): judged on one consistent view."""
        for _ in range(5):
            try:
                return self._examine()
            except _StaleListing:
                continue
            except _FromListing:
                seen = {n: o.size for n, o in self._listing.items()}
                if {o.name: o.size for o in self._list_dest()} == seen:
                    raise  # DEST is as it was judged: the refusal stands
                continue  # a listing taken while another export changed DEST is not a verdict: look again
        raise DestinationError(f"{self.dest.uri}: keeps changing while this export looks at it (other writers are at "
                               "work here); nothing was written. Choose another DEST")

    def _examine(self) -> Manifest | None:
        self._states, self._claimed, self._known = {}, set(), set()
        self.previous, self._published, self._records, self._stale = {}, {}, {}, []
        listing = self._list_dest()
        self._listing = {o.name: o for o in listing}
        sizes = {o.name: o.size for o in listing}
        if MANIFEST_NAME in sizes:
            manifest = self._read_manifest()
            same = manifest.extra.get("export_digest") == self.digest and all(sizes.get(e.name) == e.size for e in manifest.files)
            if same:
                return manifest
            raise DestinationError(
                f"{self.dest.uri}: already holds a different export (manifest.json from {manifest.source}); "
                "choose another DEST or delete that one first"
            )
        staged = self._inspect_staging(sizes)
        claim = self._states.get(STATE)
        if claim is not None and claim.digest != self.digest and not claim.expired():
            raise DestinationError(self._busy(claim))
        stray = [n for n in sizes if not n.startswith(f"{STAGING}/") and n not in self._known]
        if stray:
            raise _FromListing(
                f"{self.dest.uri}: is not empty and holds no tune2serve export (found {stray[0]}); "
                "choose an empty or new DEST, or delete what is there"
            )
        mine = {n: s for n, s in self._states.items() if s.digest == self.digest}
        for n in (n for n in sizes if not n.startswith(f"{STAGING}/")):
            owners = [s for s in self._states.values() if n in s.files]
            if not any(s.digest == self.digest for s in owners):
                raise _FromListing(
                    f"{self.dest.uri}: holds {n} from another, unfinished export; nothing was deleted. "
                    "Rerun that export to finish it, or choose another DEST")
            entry = _entry(n, next(s for s in owners if s.digest == self.digest).files[n])
            found = self.dest.content_matches(n, entry.size, entry.sha256, entry.crc32c, info=self._listing.get(n)) \
                if entry is not None else None
            if found is None:
                raise DestinationError(
                    f"{self.dest.join(n)}: is not the file the staging record describes (size or checksum differ); "
                    "it was not written by this export and nothing was deleted. Choose another DEST or remove it")
            self._published[n] = found
        for s in mine.values():
            for n, rec in s.files.items():
                if (entry := _entry(n, rec)) is not None:
                    self.previous[n] = entry
        own = self._states.get(self.state_name)
        if own is not None and own.digest == self.digest:
            self._records = {n: r for n, r in own.files.items() if _entry(n, r) is not None}
        if claim is not None and claim.digest != self.digest:  # an abandoned other export: removed once taken over
            keep = set(self.previous) | set(mine) | {STATE}
            self._stale = [n for n in staged if self._ours(n) and n not in keep]
        return None

    def claim(self) -> None:
        """Takes DEST for this export before anything is written there (see the module
        docstring), removes what a stale other export left in staging, and keeps the
        lease renewed until ``close``. Raises ``DestinationError`` naming the other
        claim when another export holds DEST, or when DEST cannot be written."""
        for _ in range(8):
            try:
                self._take()
                break
            except ConcurrentWriteError:  # someone wrote a state file since DEST was looked at: look again
                self.existing_manifest()  # raises when another export holds DEST now, or finished there
            except DestinationError as e:
                raise DestinationError(f"{self.dest.uri}: cannot be written ({e}); choose a DEST you can write to") from e
        else:
            raise DestinationError(f"{self.staging.join(STATE)}: keeps changing under this export (other writers are "
                                   "at work at this DEST); nothing was written. Choose another DEST")
        self._held = True
        self._renewed = time.monotonic()
        self._claimed.add(self.state_name)
        self._not_finished_meanwhile()
        for name in self._stale:  # the staging of an export whose claim ran out, which this one took over
            self.staging.delete(name)
        self._stale = []
        log_event(logger, "export.claim", f"{self.staging.join(STATE)}: DEST claimed for this export "
                  f"(lease {self.lease_s:g} s, renewed every {self.lease_s / 4:g} s)", dest=self.dest.uri,
                  holder=self.holder, lease_s=self.lease_s)
        self._beat = threading.Thread(target=self._heartbeat, name="export-lease", daemon=True)
        self._beat.start()

    def _not_finished_meanwhile(self) -> None:
        """Another export may have completed DEST between the look and the claim (once
        the claim is held, none can). Its manifest stands: this export's claim goes and it
        stops, having written nothing else. (The same export finished by another run is
        no harm: this one's files are the same bytes, and its manifest write finds it.)"""
        if self.dest.stat(MANIFEST_NAME) is None:
            return
        manifest = self._read_manifest()
        if manifest.extra.get("export_digest") == self.digest:
            return
        self._stop.set()
        self._held = False
        try:
            self.staging.delete(self.state_name, if_generation_match=self._generation.get(self.state_name))
        except PromotionError:
            pass
        raise DestinationError(f"{self.dest.uri}: already holds a different export (manifest.json from "
                               f"{manifest.source}, completed while this export started); choose another DEST or delete "
                               "that one first")

    def _take(self) -> None:
        """One attempt at writing the claim (and a worker's own state file), each
        conditional on what was read: ``ConcurrentWriteError`` when someone was faster."""
        claim = self._states.get(STATE)
        ours = claim is not None and claim.digest == self.digest
        if self.state_name == STATE:
            if not ours:
                self._records = {}
            self._write_own(claim.generation if claim else 0)
            return
        files = claim.files if ours and claim is not None else {}
        self._renew_shared(claim, files)
        own = self._states.get(self.state_name)
        if own is not None and own.digest != self.digest:
            self._records = {}
        self._write_own(own.generation if own else 0)

    # -- staging ------------------------------------------------------------------
    def reuse(self, name: str) -> ManifestEntry | None:
        """The entry of a file a previous interrupted run of this export recorded (pending
        or staged), when what is there checks out; anything else it recorded under that
        name is deleted, so the caller writes it again."""
        entry = self.previous.get(name)
        if entry is None:
            return None
        if name in self._published:
            self._record(name, entry, published=True)
            return entry
        found = self.staging.content_matches(name, entry.size, entry.sha256, entry.crc32c,
                                             info=self._listing.get(f"{STAGING}/{name}"))
        if found is not None:
            self._staged[name] = found
            self._record(name, entry, generation=found.generation)
            return entry
        self.staging.delete(name)  # a torn, pending or different upload of this export: not kept
        with self._lock:
            self._records.pop(name, None)
        return None

    def scratch_path(self, name: str, scratch: Path) -> Path:
        """Where the writer puts ``name``: in DEST's staging area for a local DEST (so
        staging costs a rename, not a copy; named for this run, so a stalled run that
        lost DEST never renames another's half-written file), else in local scratch."""
        local = self.staging.local_path(name)
        path = (local.parent / f"{local.name}.{self._run}.partial") if local is not None else scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def stage(self, name: str, path: Path, written: Written) -> None:
        """Records ``name`` as pending, then moves the finished file into staging in the
        background (GCS: an upload), then records what landed."""
        entry = ManifestEntry(name, written.size, written.sha256, written.crc32c if self.records_crc32c else None)
        self._record(name, entry, pending=True)  # before the upload: a rerun knows the name is this export's
        bounded = name.endswith(".safetensors")  # shards; the small files upload without waiting
        if bounded:
            self._slots.acquire()  # bounds the scratch shards on local disk

        def upload() -> None:
            try:
                landed = self.staging.upload_file(name, path, move=True)
            except PromotionError:
                self._still_ours()  # a run that lost DEST says so, not that a file was missing
                raise
            finally:
                if bounded:
                    self._slots.release()
            try:
                self._check_landed(self.staging, landed, entry)
                self._staged[name] = landed
                self._record(name, entry, generation=landed.generation)
            except PromotionError:
                if self._lost:  # landed after DEST was lost: this very object (its generation) goes
                    try:
                        self.staging.delete(name, if_generation_match=landed.generation)
                    except PromotionError:
                        pass
                raise

        self._pending.append(self._pool.submit(upload))

    def wait(self) -> None:
        for future in self._pending:
            future.result()
        self._pending.clear()

    # -- the end ------------------------------------------------------------------
    def commit(self, manifest: Manifest) -> None:
        """Publishes every staged file under its name, checks DEST holds exactly those
        objects, writes manifest.json last (only if absent), drops staging."""
        self.wait()
        self._fence()
        names = [e.name for e in manifest.files]
        try:
            placed = dict(zip(names, self._pool.map(self._place, names)))
            self._check_dest(names, placed)
        except DestinationError:
            if self._finished_by_same_export():
                return self._done()
            raise
        self._renew()  # a fresh lease: no other export can take DEST before the next write lands
        try:
            self.dest.write_bytes(MANIFEST_NAME, manifest.to_json().encode(), if_generation_match=0)
        except ConcurrentWriteError:
            if not self._finished_by_same_export():
                raise DestinationError(f"{self.dest.join(MANIFEST_NAME)}: was written by another export while this one "
                                       "committed; this export's files were not described. Choose another DEST") from None
        self.dest.sync(MANIFEST_NAME)
        self._done()

    def _done(self) -> None:
        if not self._lost:
            self._delete_staging()
        self.close()

    def _place(self, name: str) -> ObjectInfo:
        """``name`` published from staging (or found already published), checked."""
        if name in self._published:
            return self._published[name]
        entry, staged = self.entries[name], self._staged.get(name)
        try:
            landed = self.staging.publish_to(name, self.dest, if_source_generation_match=staged.generation if staged else None,
                                             if_generation_match=0)
        except ConcurrentWriteError:  # the name exists: fine only if it holds these very bytes
            found = self.dest.content_matches(name, entry.size, entry.sha256, entry.crc32c)
            if found is None:
                raise DestinationError(
                    f"{self.dest.join(name)}: was written by another writer while this export published it, and holds "
                    "other bytes; manifest.json was not written. Rerun the export, or choose another DEST") from None
            return found
        except SourceNotFoundError:
            raise DestinationError(
                f"{self.staging.join(name)}: was removed by another writer before the commit published it; "
                "manifest.json was not written. Rerun the export") from None
        self._check_landed(self.dest, landed, entry, staged)
        return landed

    def _check_dest(self, names: list[str], placed: dict[str, ObjectInfo]) -> None:
        """DEST, read once more: each file is the object this commit placed (same
        generation, size and crc32c), so the manifest about to be written describes it."""
        now = self.dest.stat_all(names)
        for name in names:
            got, want, entry = now.get(name), placed[name], self.entries[name]
            if got is None or got.size != entry.size or (want.generation and got.generation != want.generation) \
                    or (entry.crc32c and got.crc32c and got.crc32c != entry.crc32c):
                raise DestinationError(
                    f"{self.dest.join(name)}: changed while this export committed (another writer is at work at "
                    "this DEST); manifest.json was not written. Rerun the export")

    def _check_landed(self, folder: Folder, landed: ObjectInfo, entry: ManifestEntry,
                      staged: ObjectInfo | None = None) -> None:
        """What landed is what was written: size, and crc32c where the store computes
        one, else the very file staged (its generation)."""
        same = landed.size == entry.size
        if entry.crc32c and landed.crc32c:
            same = same and landed.crc32c == entry.crc32c
        elif staged is not None and staged.generation and landed.generation:
            same = same and landed.generation == staged.generation
        if not same:
            raise DestinationError(
                f"{folder.join(entry.name)}: what landed ({landed.size} bytes, crc32c {landed.crc32c}) is not what this "
                f"export wrote ({entry.size} bytes, crc32c {entry.crc32c}); manifest.json was not written. Rerun the export")

    def _finished_by_same_export(self) -> bool:
        """A run of this very export (a rerun that took DEST over) completed it meanwhile."""
        try:
            got = self.dest.read_versioned(MANIFEST_NAME)
            if got is None:
                return False
            manifest = parse_manifest(got[0], self.dest.join(MANIFEST_NAME))
        except PromotionError:
            return False
        if manifest.extra.get("export_digest") != self.digest:
            return False
        log_event(logger, "export.finished_elsewhere", f"{self.dest.uri}: another run of this same export completed it",
                  dest=self.dest.uri)
        self._lost = self._lost or "completed by another run of this export"
        return True

    def abort(self) -> None:
        """Removes everything this export staged (when it still holds DEST); a local DEST
        this run created goes too."""
        for future in self._pending:
            future.cancel()
        try:
            self.wait()
        except Exception:  # an upload that failed is being thrown away anyway
            pass
        if self._held and not self._lost:
            self._delete_staging()
        elif self._lost:
            self._drop_own_partials()
        if self._created_dest:
            self.dest.prune()
        self.close()

    def _drop_own_partials(self) -> None:
        """A run that lost DEST removes the half-written files named for it alone (local
        ``NAME.<run>.partial``): nobody else's, whoever holds DEST now."""
        try:
            names = [o.name for o in self.staging.list()] if self.staging.exists() else []
            for name in names:
                if name.endswith(f".{self._run}.partial"):
                    self.staging.delete(name)
            self.staging.prune()
        except PromotionError:
            pass

    def close(self, release: bool = False) -> None:
        """Stops the heartbeat (staging stays for a rerun). ``release``: an interrupted run
        marks its claim released, so another export need not wait out the lease."""
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join()
        self._pool.shutdown(wait=True)
        if release and self._held and not self._lost and self.state_name == STATE:
            try:
                with self._lock:
                    self._write_own(self._generation.get(STATE, 0), released=True)
            except PromotionError:
                pass  # the lease runs out on its own
        self._held = self._held and not release

    def tidy(self) -> None:
        """After a noop: what a run of this export killed after writing manifest.json left
        in staging is removed, under this export's claim; staging of anyone else stays."""
        sizes = {n: o.size for n, o in self._listing.items()}
        try:
            staged = self._inspect_staging(sizes)
        except (DestinationError, _StaleListing):
            return  # foreign files in staging (not ours to touch), or someone is at work there
        claim = self._states.get(STATE)
        if not staged:
            self.staging.prune()  # an empty folder a run killed before removing it left
            return
        if self.state_name != STATE or (claim is not None and claim.digest != self.digest and not claim.expired()):
            return
        try:
            self._stale = []
            self._records = {}
            self.claim()
            self._delete_staging()
        except PromotionError as e:
            log_event(logger, "export.tidy_skipped", f"{self.staging.uri}: left as it is ({e})", level=logging.WARNING)
        finally:
            self.close()

    # -- the claim and the state files ----------------------------------------------------
    def _record(self, name: str, entry: ManifestEntry, *, pending: bool = False, generation: int | None = None,
                published: bool = False) -> None:
        with self._lock:
            self._fence()
            record: dict[str, Any] = {"size": entry.size, "sha256": entry.sha256, "crc32c": entry.crc32c}
            if pending:
                record["pending"] = True
            if generation:
                record["generation"] = generation
            if published:
                record["published"] = True
            self._records[name] = record
            if not pending:
                self.entries[name] = entry
            self._known.add(name)
            self._write_state()

    def _write_state(self) -> None:
        """This run's state file rewritten, conditional on its last generation; a write
        that loses to another holder marks DEST lost (``DestinationError``)."""
        for _ in range(8):
            try:
                self._write_own(self._generation.get(self.state_name, 0))
                return
            except ConcurrentWriteError:
                self._conflict(self.state_name)
        raise DestinationError(f"{self.staging.join(self.state_name)}: keeps changing under this export")

    def _write_own(self, generation: int, released: bool = False) -> None:
        doc = {"writer": WRITER, "digest": self.digest, "holder": self.holder, "lease_s": self.lease_s,
               "renewed": round(time.time(), 3), "released": released, "files": dict(sorted(self._records.items()))}
        info = self.staging.write_bytes(self.state_name, json.dumps(doc, indent=1).encode(),
                                        if_generation_match=generation)
        self._generation[self.state_name] = info.generation or 0
        if self.state_name == STATE:
            self._renewed = time.monotonic()

    def _renew_shared(self, claim: _State | None, files: dict[str, Any]) -> None:
        """A fan-out worker renews the plan's claim (state.json): its lease and holder,
        its files kept as they are."""
        doc = dict(claim.doc) if claim is not None and claim.digest == self.digest else {"files": files}
        doc.update({"writer": WRITER, "digest": self.digest, "holder": self.holder, "lease_s": self.lease_s,
                    "renewed": round(time.time(), 3), "released": False})
        info = self.staging.write_bytes(STATE, json.dumps(doc, indent=1).encode(),
                                        if_generation_match=claim.generation if claim else 0)
        self._generation[STATE] = info.generation or 0
        self._renewed = time.monotonic()

    def _conflict(self, name: str) -> None:
        """A conditional write of ``name`` failed: someone else wrote it. Still ours when
        it is this export's with our holder (another step of the same fan-out renewing
        the lease): go on from its generation. Otherwise DEST is lost."""
        now = self._read_state(name)
        if now is not None and now.digest == self.digest and now.holder == self.holder:
            self._generation[name] = now.generation
            return
        self._lose(now)

    def _lose(self, now: _State | None) -> None:
        """Marks DEST lost to whoever holds the claim ``now`` and raises."""
        if now is not None and now.digest == self.digest:
            why = f"a rerun of this same export ({now.holder}) took it over and carries on"
        elif now is not None:
            why = f"another export took it over ({now.describe()})"
        else:
            why = "its claim was removed by another writer"
        self._lost = (f"{self.dest.uri}: this export no longer holds DEST — {why}; this run stops here and deletes "
                      "nothing")
        raise DestinationError(self._lost)

    def _still_ours(self) -> None:
        """Raises the lost-DEST error when another writer holds the claim now."""
        if self._lost:
            raise DestinationError(self._lost)
        now = self._read_state(STATE)
        if now is None or now.digest != self.digest or now.holder != self.holder:
            self._lose(now)

    def _renew(self) -> None:
        """Renews the lease now (the claim rewritten, conditionally)."""
        with self._lock:
            if self._lost:
                raise DestinationError(self._lost)
            if self.state_name == STATE:
                self._write_state()
                return
            for _ in range(8):
                claim = self._read_state(STATE)
                if claim is None or claim.digest != self.digest or claim.holder != self.holder:
                    self._lose(claim)
                try:
                    self._renew_shared(claim, {})
                    return
                except ConcurrentWriteError:
                    continue

    def _fence(self) -> None:
        """Before any write that counts: DEST is still ours, and the lease fresh (renewed
        now when half of it has gone by without a heartbeat)."""
        if self._lost:
            raise DestinationError(self._lost)
        if self._held and time.monotonic() - self._renewed > self.lease_s / 2:
            self._renew()

    def _heartbeat(self) -> None:
        """Renews the lease every quarter lease until ``close``. A renewal that fails to
        another holder marks DEST lost (every later write then stops); one that fails
        for a transient reason is retried at the next beat."""
        interval = max(0.05, self.lease_s / 4)
        while not self._stop.wait(interval):
            try:
                self._renew()
            except PromotionError as e:
                if self._lost:
                    return
                log_event(logger, "export.lease_renewal_failed", f"{self.staging.join(STATE)}: lease not renewed ({e}); "
                          "retrying", level=logging.WARNING)

    def _busy(self, claim: _State) -> str:
        return (f"{self.dest.uri}: another export is being written here (claim {self.staging.join(STATE)}: "
                f"{claim.describe()}); nothing was changed. Wait for it to finish, or choose another DEST — an "
                "abandoned claim is taken over once its lease ends")

    # -- helpers ------------------------------------------------------------------
    def _list_dest(self) -> list[ObjectInfo]:
        try:
            return self.dest.list() if self.dest.exists() else []
        except PromotionError as e:
            root = self.dest.local_root()
            if root is not None and root.exists() and not root.is_dir():
                raise DestinationError(f"{self.dest.uri}: is a file, not a folder; choose another DEST") from e
            raise DestinationError(f"{self.dest.uri}: cannot be listed ({e}); check the path and your access") from e

    def _read_manifest(self) -> Manifest:
        try:
            return parse_manifest(self.dest.read_bytes(MANIFEST_NAME), self.dest.join(MANIFEST_NAME))
        except CheckpointError as e:
            raise DestinationError(f"{self.dest.uri}: holds an unreadable manifest.json ({e}); choose another DEST or "
                                   "delete it") from e

    def _inspect_staging(self, sizes: dict[str, int]) -> list[str]:
        """The names in staging, after reading every state file there (``_states``,
        ``_claimed``, ``_known``); ``DestinationError`` when one of them is not this tool's."""
        staged = [n[len(STAGING) + 1:] for n in sizes if n.startswith(f"{STAGING}/")]
        for name in sorted(n for n in staged if _is_state_name(n)):
            state = self._read_state(name)
            if state is not None:
                self._states[name] = state
                self._claimed.add(name)
                self._known.update(state.files)
            elif self.staging.stat(name) is None:
                raise _StaleListing(name)  # listed a moment ago, gone now: look again
        foreign = [n for n in staged if not self._ours(n)]
        if foreign:
            raise _FromListing(
                f"{self.dest.join(STAGING + '/' + foreign[0])}: is in the staging folder but was not written by "
                f"tune2serve export; nothing was deleted. Move it out of {STAGING}/ or choose another DEST")
        return staged

    def _read_state(self, name: str) -> _State | None:
        """A state file of this tool as it is now (None when absent, or not carrying the
        mark: a file that is not ours)."""
        try:
            got = self.staging.read_versioned(name)
            if got is None:
                return None
            data, info = got
            doc = bounded_json.loads(data, self.staging.join(name))
        except (PromotionError, ValueError):
            return None
        if not (isinstance(doc, dict) and doc.get("writer") == WRITER and isinstance(doc.get("files"), dict)
                and all(isinstance(k, str) and isinstance(v, dict) for k, v in doc["files"].items())):
            return None
        lease = doc.get("lease_s")
        lease_s = float(lease) if bounded_json.is_finite_number(lease) and float(lease) > 0 else None
        digest = doc.get("digest")
        return _State(name, digest if isinstance(digest, str) else None, str(doc.get("holder") or ""), lease_s,
                      doc.get("released") is True, info.generation or 0, info.updated, doc["files"], doc)

    def _ours(self, name: str) -> bool:
        """Whether a file in staging is provably this tool's: a claimed state file, a
        file a claimed state records, or (only under a claim) a writer's ``.partial``
        or the write probe of earlier versions."""
        if name in self._claimed or name in self._known or name in self.entries:
            return True
        base = name.rsplit("/", 1)[-1]
        return bool(self._claimed) and (base == ".probe" or base.endswith(".partial"))

    def _delete_staging(self) -> None:
        """Deletes what this tool wrote in staging, nothing else: a file there that no
        claim accounts for stays (and so does the folder holding it). The state files go
        last and the claim very last, so a run killed meanwhile leaves a claim that
        still accounts for what is left."""
        try:
            staged = [o.name for o in self.staging.list()] if self.staging.exists() else []
        except PromotionError:
            staged = sorted(n[len(STAGING) + 1:] for n in self._listing if n.startswith(f"{STAGING}/"))
        states = sorted((n for n in staged if n in self._claimed), key=lambda n: n == STATE)
        for name in staged:
            if name not in states and self._ours(name):
                self.staging.delete(name)
        for name in states:
            try:
                self.staging.delete(name, if_generation_match=self._generation.get(name) if name == STATE else None)
            except ConcurrentWriteError:
                pass  # another run took the claim over meanwhile: it is theirs now
        self.staging.prune()


_FromListing = RefusalFromListing  # confirmed by a second listing before it stands
_StaleListing = StaleListingError


def _is_state_name(name: str) -> bool:
    return name == STATE or (name.startswith("state-") and name.endswith(".json") and "/" not in name)


def _entry(name: str, record: dict[str, Any]) -> ManifestEntry | None:
    """A state file's record as a manifest entry; None when it is not well formed."""
    try:
        size, sha = int(record["size"]), record["sha256"]
    except (KeyError, TypeError, ValueError):
        return None
    crc = record.get("crc32c")
    if not isinstance(sha, str) or size < 0 or (crc is not None and not isinstance(crc, str)):
        return None
    return ManifestEntry(name, size, sha, crc or None)
