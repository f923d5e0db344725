"""What the SDK refuses before any request — a region it does not know, credentials that
are not there — is one clear message with the documented exit code, not its traceback."""

from __future__ import annotations

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
