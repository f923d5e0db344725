"""One live writer per DEST (issue 21 item 2).

First what the protocol stands on: the conditional writes of the storage layer, on
fake-gcs-server (shown to enforce the preconditions relied on — else a race test tests
nothing) and on local disk (the same semantics: directory lock, ``O_TMPFILE`` + link).
Then whole exports in child processes, started at generated offsets from each other,
killed or frozen (SIGSTOP, a writer whose lease runs out) at named instants: two
different exports never both exit 0, the loser names the claim, nothing ends in a
traceback, and ``manifest.json`` always describes exactly the bytes at DEST.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import upload_folder
from tests.export.publish_helpers import (
    Child, assert_manifest_describes, env_for, no_traceback, parse_json_stdout, run_child, snapshot,
)
from tests.export.publish_helpers import reap_children  # noqa: F401  (autouse: no child outlives its test)
from tune2serve.components.errors import ConcurrentWriteError

SHARD = "100KB"
A_ARGS = ["--max-shard-size", SHARD]                      # the export
B_ARGS = ["--max-shard-size", SHARD, "--dtype", "float16"]  # another export of the same source
_CACHE: dict[tuple[str, str], dict[str, bytes]] = {}


# -- what the protocol stands on ---------------------------------------------------------------
def test_fake_gcs_server_enforces_the_preconditions_the_claim_relies_on(gcs_bucket: str) -> None:
    """Create-if-absent (``if_generation_match=0``) and replace-if-generation
    (``if_generation_match=N``) on single-request uploads — what the claim, the state
    files and ``manifest.json`` are — through the real client; and a read at a
    generation that is gone is refused (a pinned source read)."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    from tune2serve.components.checkpoint.storage import storage_client

    bucket = storage_client().bucket(gcs_bucket)
    bucket.blob("claim").upload_from_string(b"first", if_generation_match=0)
    first = bucket.get_blob("claim").generation
    with pytest.raises(PreconditionFailed):
        bucket.blob("claim").upload_from_string(b"second", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        bucket.blob("claim").upload_from_string(b"second", if_generation_match=first + 1)
    bucket.blob("claim").upload_from_string(b"second", if_generation_match=first)
    with pytest.raises(PreconditionFailed):  # the generation a slower writer read is stale now
        bucket.blob("claim").upload_from_string(b"third", if_generation_match=first)
    assert bucket.blob("claim").download_as_bytes() == b"second"
    with pytest.raises(NotFound):
        bucket.blob("claim", generation=first).download_as_bytes()


def test_what_fake_gcs_server_does_not_enforce_is_not_relied_on(gcs_bucket: str) -> None:
    """This fake-gcs-server ignores the preconditions of copies, deletes and resumable
    (large) uploads, which real GCS enforces. The export passes them anyway, for real GCS,
    but its safety never rests on them: the commit checks the crc32c of what each copy
    landed and reads DEST once more before creating ``manifest.json`` (enforced, above).
    When this fails, the fake enforces them now: keep the checks, drop this test."""
    from tune2serve.components.checkpoint.storage import storage_client

    bucket = storage_client().bucket(gcs_bucket)
    bucket.blob("a").upload_from_string(b"a", if_generation_match=0)
    bucket.blob("b").upload_from_string(b"b", if_generation_match=0)
    stale = bucket.get_blob("b").generation + 1
    bucket.copy_blob(bucket.blob("a"), bucket, "b", if_generation_match=0)  # not refused
    assert bucket.blob("b").download_as_bytes() == b"a"
    bucket.blob("b").delete(if_generation_match=stale)  # not refused either
    assert not bucket.blob("b").exists()


def _folders(tmp: Path, bucket: str) -> dict[str, Any]:
    from tune2serve.components.checkpoint.storage import open_folder

    tag = uuid.uuid4().hex[:8]
    return {"local": open_folder(tmp / tag), "gcs": open_folder(f"gs://{bucket}/{tag}")}


_OPS = st.lists(st.sampled_from(["create", "replace", "replace_stale", "delete", "delete_stale", "read"]),
                min_size=1, max_size=14)


def test_conditional_writes_mean_the_same_on_local_disk_and_gcs(gcs_bucket: str, tmp_path: Path) -> None:
    """Generated sequences of conditional creates, replaces, deletes (with the current or
    a stale generation) and versioned reads, run against a model: each succeeds or is
    refused (``ConcurrentWriteError``) exactly when the model says, reads return the last
    bytes written with their generation, and a generation is never seen twice for one
    name. Stale deletes are checked on local disk only (fake-gcs-server ignores them)."""

    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(ops=_OPS, payloads=st.lists(st.binary(max_size=40), min_size=14, max_size=14))
    def case(ops: list[str], payloads: list[bytes]) -> None:
        for kind, folder in _folders(tmp_path, gcs_bucket).items():
            data: bytes | None = None
            current, seen = 0, [0]
            for op, payload in zip(ops, payloads):
                stale = next((g for g in reversed(seen) if g != current), None)
                if op == "read":
                    got = folder.read_versioned("x")
                    assert (got is None) == (data is None), (kind, ops)
                    if got is not None:
                        assert got[0] == data and got[1].generation == current, (kind, ops)
                elif op in ("create", "replace", "replace_stale"):
                    expected = {"create": 0, "replace": current, "replace_stale": stale}[op]
                    if expected is None:
                        continue
                    if expected == current:  # 0 = absent: a create
                        info = folder.write_bytes("x", payload, if_generation_match=expected)
                        assert info.generation and info.generation not in seen, (kind, ops)
                        data, current = payload, info.generation
                        seen.append(current)
                    else:
                        with pytest.raises(ConcurrentWriteError):
                            folder.write_bytes("x", payload, if_generation_match=expected)
                elif op == "delete" and data is not None:
                    folder.delete("x", if_generation_match=current)
                    data, current = None, 0
                elif op == "delete_stale" and kind == "local" and data is not None and stale:
                    with pytest.raises(ConcurrentWriteError):
                        folder.delete("x", if_generation_match=stale)

    case()


@pytest.mark.parametrize("kind", ["local", "gcs"])
def test_conditional_increments_from_many_threads_lose_no_update(kind: str, gcs_bucket: str, tmp_path: Path) -> None:
    """Eight threads each add 1 five times to a counter through read → conditional
    write → retry on ``ConcurrentWriteError``: the counter ends at 40 (a lost update —
    two writers both succeeding from the same generation — would leave it lower)."""
    folder = _folders(tmp_path, gcs_bucket)[kind]
    folder.write_bytes("counter", b"0", if_generation_match=0)
    refused = [0]

    def add() -> None:
        for _ in range(5):
            while True:
                data, info = folder.read_versioned("counter")
                try:
                    folder.write_bytes("counter", str(int(data) + 1).encode(), if_generation_match=info.generation)
                    break
                except ConcurrentWriteError:
                    refused[0] += 1

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert folder.read_versioned("counter")[0] == b"40"
    assert refused[0] > 0, "no write was ever refused: the race never happened"


# -- whole exports -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gcs_base(fake_gcs_url: str, tiny_llama: Path) -> str:
    from tune2serve.components.checkpoint.storage import storage_client

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", fake_gcs_url)
        bucket = f"race-{uuid.uuid4().hex[:10]}"
        storage_client().create_bucket(bucket)
        return upload_folder(tiny_llama, bucket, "bases/tiny")


@pytest.fixture(params=["local", "gcs"])
def setup(request: pytest.FixtureRequest, tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory,
          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """SOURCE, a DEST maker and the children's environment, local or gs://."""
    kind = request.param
    if kind == "gcs":
        url = request.getfixturevalue("fake_gcs_url")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        source, env = request.getfixturevalue("gcs_base"), env_for(url)
        bucket = source.split("/")[2]
        new_dest = lambda: f"gs://{bucket}/exports/{uuid.uuid4().hex[:10]}"  # noqa: E731
    else:
        source, env = str(tiny_llama), env_for()
        root = tmp_path_factory.mktemp("dests")
        new_dest = lambda: str(root / uuid.uuid4().hex[:10])  # noqa: E731
    return {"kind": kind, "source": source, "env": env, "new_dest": new_dest, "logs": tmp_path_factory.mktemp("logs")}


def _log(setup: dict[str, Any]) -> Path:
    return setup["logs"] / f"{uuid.uuid4().hex[:8]}.log"


def _reference(setup: dict[str, Any], args: list[str]) -> dict[str, bytes]:
    """What an export alone at a fresh DEST leaves there (once per store and options)."""
    key = (setup["kind"], " ".join(args))
    if key not in _CACHE:
        dest = setup["new_dest"]()
        code, out = run_child(["export", setup["source"], dest, *args], setup["env"], _log(setup))
        assert code == 0, out[-2000:]
        _CACHE[key] = snapshot(dest)
    return _CACHE[key]


def _export(setup: dict[str, Any], dest: str, args: list[str], **env: str) -> Child:
    return Child(["export", setup["source"], dest, *args, "--json"], {**setup["env"], **env}, _log(setup))


_REFUSED = ("another export is being written here", "already holds a different export")


def test_two_different_exports_racing_for_one_dest(setup: dict[str, Any]) -> None:
    """Two different exports (float32 and float16 of one source) started at a generated
    offset from each other, either first: exactly one exits 0 and DEST is byte for byte
    its export alone; the other exits 1 naming the claim (or the finished export); no
    traceback; the manifest describes DEST."""
    references = {"a": _reference(setup, A_ARGS), "b": _reference(setup, B_ARGS)}

    @settings(max_examples=6, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(offset=st.floats(0.0, 1.5), b_first=st.booleans())
    def case(offset: float, b_first: bool) -> None:
        dest = setup["new_dest"]()
        order = [("b", B_ARGS), ("a", A_ARGS)] if b_first else [("a", A_ARGS), ("b", B_ARGS)]
        first = (order[0][0], _export(setup, dest, order[0][1]))
        time.sleep(offset)
        second = (order[1][0], _export(setup, dest, order[1][1]))
        codes = {name: child.wait() for name, child in (first, second)}
        outputs = {name: child.output() for name, child in (first, second)}
        for out in outputs.values():
            no_traceback(out)
        assert sorted(codes.values()) == [0, 1], (offset, b_first, codes, {k: v[-1500:] for k, v in outputs.items()})
        winner = next(name for name, code in codes.items() if code == 0)
        loser = "a" if winner == "b" else "b"
        assert any(words in outputs[loser] for words in _REFUSED), outputs[loser][-1500:]
        refusal = parse_json_stdout(outputs[loser])
        assert refusal is not None and refusal["ok"] is False and refusal["files"] == []
        files = snapshot(dest)
        assert files == references[winner], sorted(set(files) ^ set(references[winner]))
        assert_manifest_describes(files)

    case()


def test_a_live_claim_of_another_export_is_refused_by_name_until_its_lease_ends(setup: dict[str, Any]) -> None:
    """An export killed mid-upload leaves its claim, with a 1 s lease. Another export at
    once: exit 1 naming the claim (export, holder, lease), DEST untouched. Once the lease
    has ended, the other export takes DEST over, removes the dead one's staging, and DEST
    is its export alone."""
    reference = _reference(setup, B_ARGS)
    dest = setup["new_dest"]()
    assert _export(setup, dest, A_ARGS, KILL_AT="upload:4:after", TUNE2SERVE_EXPORT_LEASE_S="1").wait() == -9
    before = snapshot(dest)
    assert any(n.startswith("_staging/model-") for n in before)

    refused = _export(setup, dest, B_ARGS)
    assert refused.wait() == 1
    out = refused.output()
    no_traceback(out)
    assert "another export is being written here" in out and "_staging/state.json" in out and "lease of 1 s" in out
    assert "pid" in out and "nothing was changed" in out
    assert snapshot(dest) == before

    time.sleep(1.2)
    taker = _export(setup, dest, B_ARGS)
    assert taker.wait() == 0, taker.output()[-2000:]
    files = snapshot(dest)
    assert files == reference, sorted(set(files) ^ set(reference))
    assert_manifest_describes(files)


def test_a_stalled_writer_whose_lease_ended_loses_dest_and_deletes_nothing(setup: dict[str, Any]) -> None:
    """An export frozen (SIGSTOP) mid-upload for longer than its 1 s lease: another
    export takes DEST over and completes. Woken up, the frozen one finds its claim gone:
    exit 1 saying DEST was taken over, no traceback — and DEST is still exactly the
    other export, its manifest true (the stalled run's late files are its own to remove)."""
    reference = _reference(setup, B_ARGS)
    dest = setup["new_dest"]()
    stalled = _export(setup, dest, A_ARGS, KILL_AT="upload:2:after:STOP", TUNE2SERVE_EXPORT_LEASE_S="1")
    stalled.stopped()
    time.sleep(1.2)
    taker = _export(setup, dest, B_ARGS)
    assert taker.wait() == 0, taker.output()[-2000:]

    stalled.resume()
    assert stalled.wait() == 1, stalled.output()[-2000:]
    out = stalled.output()
    no_traceback(out)
    assert "no longer holds DEST" in out and "deletes nothing" in out
    files = snapshot(dest)
    assert files == reference, sorted(set(files) ^ set(reference))
    assert_manifest_describes(files)


def test_a_rerun_of_the_same_export_takes_over_a_live_claim_at_once(setup: dict[str, Any]) -> None:
    """The same export again while the first is frozen mid-upload with a live lease
    (120 s): the rerun takes the claim over at once (no waiting), resumes and completes;
    the first, woken, stops (exit 1, taken over by a rerun) or finds the export done
    (exit 0) — either way no traceback, and DEST is the export, its manifest true."""
    reference = _reference(setup, A_ARGS)
    dest = setup["new_dest"]()
    first = _export(setup, dest, A_ARGS, KILL_AT="upload:4:after:STOP")
    first.stopped()
    started = time.monotonic()
    rerun = _export(setup, dest, A_ARGS)
    assert rerun.wait(timeout=60) == 0, rerun.output()[-2000:]
    assert time.monotonic() - started < 60
    first.resume()
    assert first.wait() in (0, 1), first.output()[-2000:]
    no_traceback(first.output())
    files = snapshot(dest)
    assert files == reference, sorted(set(files) ^ set(reference))
    assert_manifest_describes(files)


def test_an_interrupted_export_releases_its_claim_for_another_at_once(tiny_llama: Path, tmp_path: Path, cli: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (not a kill: ``finally`` runs) marks the claim released, so a different
    export need not wait out the lease; the interrupted one's staging goes with it."""
    from tune2serve.components.export import export as export_module

    real = export_module.write_shard
    calls: list[int] = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    dest = tmp_path / "dest"
    monkeypatch.setattr(export_module, "write_shard", interrupted)
    assert cli("export", tiny_llama, dest, *A_ARGS)[0] == 130
    monkeypatch.setattr(export_module, "write_shard", real)
    assert '"released": true' in (dest / "_staging" / "state.json").read_text()

    code, doc, err = cli("export", tiny_llama, dest, *B_ARGS, "--json")
    assert code == 0, err[-2000:]
    files = snapshot(str(dest))
    assert "_staging/" not in files and doc is not None and doc["dtype"] == "float16"
    assert_manifest_describes(files)


def test_a_local_write_lock_held_too_long_is_named_not_waited_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local conditional write waits for the directory lock only ``LOCK_WAIT_S``: a
    holder frozen inside it makes the write fail naming the folder, never hang."""
    from tune2serve.components.checkpoint import storage
    from tune2serve.components.errors import DestinationError

    monkeypatch.setattr(storage, "LOCK_WAIT_S", 0.2)
    folder = storage.open_folder(tmp_path / "d")
    folder.write_bytes("claim", b"1", if_generation_match=0)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with storage._dir_lock(tmp_path / "d"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        with pytest.raises(DestinationError, match="held its write lock for more than 0.2 s"):
            folder.write_bytes("claim", b"2", if_generation_match=folder.stat("claim").generation)
    finally:
        release.set()
        holder.join()
    assert folder.read_versioned("claim")[0] == b"1"
