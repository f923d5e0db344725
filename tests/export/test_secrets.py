"""Credentials never leave with an export: dropped from every copied JSON file with a
warning naming file and JSON path; validate warns on them; URLs in errors are redacted.
Generated documents with credentials at random paths go through export and validate
(their logs, --json, reports and the exported files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.checkpoint.test_secrets import document
from tune2serve.components.checkpoint.secrets import redact, scrub
from tune2serve.cli.main import main

TOKEN = "hf_" + "a1B2c3D4" * 5


def test_export_drops_token_keys_and_names_them(tiny_llama: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    shutil.copytree(tiny_llama, src)
    for name, extra in (("config.json", {"use_auth_token": TOKEN, "text_config": {"hub_token": "x"}}),
                        ("tokenizer_config.json", {"token": TOKEN}),
                        ("generation_config.json", {"hf_token": "secret-value", "note": TOKEN})):
        path = src / name
        doc = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**doc, **extra}))

    code = main(["validate", str(src), "--json"])
    report = json.loads(capsys.readouterr().out)
    warned = {(f["file"], f["code"]) for f in report["findings"]}
    assert {("config.json", "secret-in-config"), ("tokenizer_config.json", "secret-in-config"),
            ("generation_config.json", "secret-in-config")} <= warned

    code = main(["export", str(src), str(tmp_path / "dest")])
    err = capsys.readouterr().err
    assert code == 0, err
    for name, key in (("config.json", "use_auth_token"), ("config.json", "text_config.hub_token"),
                      ("tokenizer_config.json", "token"), ("generation_config.json", "hf_token"),
                      ("generation_config.json", "note")):
        assert f"{name}: $.{key} holds" in err
    exported = "".join(p.read_text(errors="replace") for p in (tmp_path / "dest").iterdir() if p.suffix == ".json")
    assert TOKEN not in exported and "secret-value" not in exported
    assert "note" not in json.loads((tmp_path / "dest" / "generation_config.json").read_text())
    assert main(["validate", str(tmp_path / "dest"), "--json"]) == 0, capsys.readouterr()


def test_scrub_keeps_token_settings_that_are_not_credentials() -> None:
    doc = {"pad_token": "<pad>", "bos_token_id": 1, "token": None, "use_auth_token": False,
           "added_tokens_decoder": {"0": {"content": "<unk>"}}}
    assert scrub(doc) == (doc, [])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=document(), generation=document(), tokenizer=document())
def test_generated_secrets_never_leave_through_export_or_validate(
        tiny_llama: Path, capsys: pytest.CaptureFixture[str], config: Any, generation: Any, tokenizer: Any) -> None:
    """Credentials at random paths of config.json (under a key of its own), generation_config.json
    and tokenizer_config.json: each named by file and path in export's warnings and validate's
    findings; not one of them in the exported files, the logs, --json or validate's reports."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dest, reports = Path(tmp) / "src", Path(tmp) / "dest", Path(tmp) / "reports"
        shutil.copytree(tiny_llama, src)
        expected: set[tuple[str, str, str]] = set()
        secrets: list[str] = []
        for name, (doc, _want, found) in (("config.json", config), ("generation_config.json", generation),
                                           ("tokenizer_config.json", tokenizer)):
            path = src / name
            base = json.loads(path.read_text()) if path.exists() else {}
            base.pop("extra_settings", None)
            path.write_text(json.dumps({**base, "extra_settings": doc}))
            expected |= {(name, p.replace("$", "$.extra_settings", 1), a) for p, _, a in found}
            secrets += [secret for _, secret, _ in found]

        code = main(["validate", str(src), "--json", "--report-dir", str(reports)])
        out, err = capsys.readouterr()
        report = json.loads(out)
        warned = {(f["file"], f["message"]) for f in report["findings"] if f["code"] == "secret-in-config"}
        assert {(n, p) for n, p, _ in expected} == {(n, m.split(": ", 2)[1].split(" ")[0]) for n, m in warned}
        reported = out + err + "".join(p.read_text() for p in reports.rglob("*") if p.is_file())

        code = main(["export", str(src), str(dest), "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        dropped = {(e["file"], e["json_path"]) for e in logged if e.get("event") == "export.secret_dropped"}
        assert dropped == {(n, p) for n, p, _ in expected}
        exported = "".join(p.read_text(errors="replace") for p in dest.iterdir() if p.is_file())
        for secret in secrets:
            assert secret not in reported and secret not in out + err and secret not in exported
        assert main(["validate", str(dest), "--json"]) == 0
        assert not [f for f in json.loads(capsys.readouterr().out)["findings"] if f["code"] == "secret-in-config"]


@pytest.mark.parametrize("text, secret", [
    ("gs://user:pa55@bucket/x unreachable", "pa55"),
    ("https://oauth2:ghp_abc@host/repo.git: 403", "ghp_abc"),
    ("https://storage.googleapis.com/b/o?X-Goog-Signature=deadbeef&x=1", "deadbeef"),
    ("https://host/p?token=abc123", "abc123"),
])
def test_redact_removes_credentials_from_urls(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "***" in redact(text)


def test_cli_error_redacts_a_credential_in_the_source_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "https://user:hunter2@example.invalid/model", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert "hunter2" not in err
