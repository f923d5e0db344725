"""Resume after a kill at any instant (issue 21 item 3).

An export runs in a child process and is SIGKILLed at an instant hypothesis picks among
the events of one phase — plan, write, upload, index, commit, manifest —, just before or
just after the event (``kill_driver``: the real storage and publisher methods, wrapped
only to count and kill). Then the same export runs again at once: it must exit 0 and
leave DEST byte for byte what an uninterrupted export leaves (no ``_staging/``, nothing
else), with a ``manifest.json`` that describes every file there. Local folders and gs://
(fake-gcs-server, the real client) alike.

The kill right after a shard's upload and before the state file recorded it used to make
every rerun refuse ("is in the staging folder but was not written by tune2serve export"):
each shard is now recorded as pending before its upload starts.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import upload_folder
from tests.export.kill_driver import PHASES
from tests.export.publish_helpers import assert_manifest_describes, env_for, event_counts, no_traceback, run_child, snapshot
from tests.export.publish_helpers import reap_children  # noqa: F401  (autouse: no child outlives its test)

SHARD = "350KB"  # 6 shards of the tiny Llama (hidden 128, head size 64)
_CACHE: dict[tuple[str, str], Any] = {}


@pytest.fixture(scope="module")
def gcs_base(fake_gcs_url: str, tiny_llama: Path) -> str:
    """tiny_llama uploaded once for the module (the manifest names its source, so every
    export compared must read the very same URI)."""
    from tune2serve.components.checkpoint.storage import storage_client

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", fake_gcs_url)
        bucket = f"resume-{uuid.uuid4().hex[:10]}"
        storage_client().create_bucket(bucket)
        return upload_folder(tiny_llama, bucket, "bases/tiny")


@pytest.fixture(params=["local", "gcs"])
def setup(request: pytest.FixtureRequest, tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory,
          monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """SOURCE, a DEST maker, the child's environment, the reference export and how many
    events of each phase an uninterrupted run makes."""
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
    logs = tmp_path_factory.mktemp("logs")
    if (kind, "reference") not in _CACHE:
        from tune2serve.components.export.export import export_checkpoint

        dest = new_dest()
        export_checkpoint(source, dest, max_shard_size=SHARD)
        _CACHE[(kind, "reference")] = snapshot(dest)
        _CACHE[(kind, "counts")] = event_counts(["export", source, new_dest(), "--max-shard-size", SHARD], env, logs)
    return {"kind": kind, "source": source, "env": env, "new_dest": new_dest, "logs": logs,
            "reference": _CACHE[(kind, "reference")], "counts": _CACHE[(kind, "counts")]}


def _kill_then_rerun(setup: dict[str, Any], cli: Any, kill_at: str) -> None:
    dest = setup["new_dest"]()
    code, out = run_child(["export", setup["source"], dest, "--max-shard-size", SHARD],
                          {**setup["env"], "KILL_AT": kill_at}, setup["logs"] / f"{uuid.uuid4().hex[:8]}.log")
    assert code == -9, f"{kill_at}: not killed (exit {code}):\n{out[-2000:]}"
    assert "manifest.json" not in snapshot(dest) or kill_at.startswith("manifest"), kill_at

    code, doc, err = cli("export", setup["source"], dest, "--max-shard-size", SHARD, "--json")

    assert code == 0, f"{kill_at}: the rerun failed:\n{err[-3000:]}"
    no_traceback(err)
    files = snapshot(dest)
    assert files == setup["reference"], f"{kill_at}: differs from the uninterrupted export: " \
        f"{sorted(set(files) ^ set(setup['reference']))} / " \
        f"{sorted(n for n in files if n in setup['reference'] and files[n] != setup['reference'][n])}"
    assert_manifest_describes(files)


def test_every_phase_has_events(setup: dict[str, Any]) -> None:
    """The kill points cover every phase (so the test below kills in each), and the
    export's shape is what the counts assume: 6 shards and 6 small files, each recorded
    pending, staged, recorded landed; 12 files published."""
    counts = setup["counts"]
    assert set(counts) == set(PHASES), counts
    assert counts["upload"] == 18 and counts["index"] == 18 and counts["commit"] == 12, counts
    assert counts["write"] >= 6 and counts["plan"] == 2 and counts["manifest"] >= 2, counts


@pytest.mark.parametrize("phase", PHASES)
def test_a_kill_at_any_instant_then_a_rerun_gives_the_uninterrupted_export(
        setup: dict[str, Any], phase: str, cli: Any) -> None:
    @settings(max_examples=3, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(n=st.integers(0, setup["counts"][phase] - 1), when=st.sampled_from(["before", "after"]))
    def case(n: int, when: str) -> None:
        _kill_then_rerun(setup, cli, f"{phase}:{n}:{when}")

    case()


@pytest.mark.parametrize("kill_at", ["upload:1:after", "upload:4:after", "index:1:after", "commit:3:after",
                                     "manifest:0:after"])
def test_the_kills_that_used_to_leave_dest_unusable_resume(setup: dict[str, Any], kill_at: str, cli: Any) -> None:
    """After a shard's or small file's upload and before its record (the refusal the
    issue saw), in the middle of the commit, and after manifest.json before staging went."""
    _kill_then_rerun(setup, cli, kill_at)
