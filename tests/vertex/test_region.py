"""What the SDK refuses before any request — a region it does not know, credentials that
are not there — is one clear message with the documented exit code, not its traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tune2serve.cli.main import main



@pytest.mark.parametrize("region", ["r", "us-central", "mars-north1", "US CENTRAL1"])
@pytest.mark.parametrize("verb", [["smoke-test", "1"], ["verify-traffic", "1"]], ids=lambda v: v[0])
def test_an_unknown_region_exits_2_naming_the_flag(verb: list[str], region: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*verb, "--project", "p", "--region", region])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--region {region!r}" in err and "Traceback" not in err and "frozenset" not in err


@pytest.mark.parametrize("verb", [["smoke-test", "1"], ["verify-traffic", "1"],
                                  ["verify-traffic", "1", "--model", "projects/p/locations/us-central1/models/2"]],
                         ids=lambda v: " ".join(v[:3]))
def test_missing_credentials_say_how_to_get_them(verb: list[str], tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """No Application Default Credentials and no local stack: exit 1 with the two ways out
    (gcloud's ADC login, or the local stack's environment), never the SDK's traceback."""
    monkeypatch.delenv("TUNE2SERVE_VERTEX_API_ENDPOINT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    code = main([*verb, "--project", "p", "--region", "us-central1"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "no Google Cloud credentials found" in err and "gcloud auth application-default login" in err
    assert "tune2serve local env" in err and "Traceback" not in err


def test_missing_credentials_name_the_local_stack_running_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """With a local stack running where `tune2serve local` looks (./.tune2serve), the
    credentials error says so and gives the exact `local env` line; its home given by
    $TUNE2SERVE_HOME is found too, and a hint for another home carries --home."""
    import subprocess
    import sys

    from tune2serve.localstack import procs
    from tune2serve.localstack.hints import local_command

    monkeypatch.delenv("TUNE2SERVE_VERTEX_API_ENDPOINT", raising=False)
    monkeypatch.delenv("TUNE2SERVE_HOME", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    monkeypatch.chdir(tmp_path)
    main(["smoke-test", "1", "--project", "p", "--region", "us-central1"])
    err = capsys.readouterr().err
    assert "is running" not in err and "run 'tune2serve local up', then 'eval \"$(tune2serve local env)\"'" in err

    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands in for the server
    try:
        home = tmp_path / ".tune2serve"
        procs.write_pidfile(home / "run" / "vertex.json", procs.PidRecord.of(server.pid, "vertex", 1))
        assert main(["smoke-test", "1", "--project", "p", "--region", "us-central1"]) == 1
        err = capsys.readouterr().err
        assert f"a local stack is running in {home}: to use it, run 'eval \"$(tune2serve local env)\"'" in err
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        assert "is running" not in (main(["smoke-test", "1", "--project", "p", "--region", "us-central1"]),
                                    capsys.readouterr().err)[1]
        monkeypatch.setenv("TUNE2SERVE_HOME", str(home))
        assert main(["smoke-test", "1", "--project", "p", "--region", "us-central1"]) == 1
        assert f"a local stack is running in {home}" in capsys.readouterr().err
        monkeypatch.delenv("TUNE2SERVE_HOME")
        assert local_command("down", home) == f"tune2serve local down --home {home}"
        assert local_command("down", elsewhere / ".tune2serve") == local_command("down") == "tune2serve local down"
    finally:
        server.kill()
        server.wait()
