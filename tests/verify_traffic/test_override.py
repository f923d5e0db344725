"""force_promote, the audited override (override.py): reasons and verdicts as a user may
type them (hypothesis), who ran it through google.auth's real credential loading (a
service-account key and a user's ADC file written on the spot), the one structured log
line, the labels it leaves (endpoint and pipeline job, within label rules) and the
promotion record beside the export, locally and on fake-gcs-server — and that a hold
refuses before any network call, exit 1."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.components.errors import UsageError
from tune2serve.components.verify_traffic import override as ov
from tune2serve.components.verify_traffic.record import PromotionRecord, read_record, record_labels
from tune2serve.components.vertex.clients import VertexTarget

LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
CLOUD = VertexTarget("p", "us-central1")
LOCAL = VertexTarget("p", "us-central1", "http://127.0.0.1:9")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=700))
def test_a_reason_is_one_bounded_line_or_a_usage_error(text: str) -> None:
    try:
        reason = ov.check_reason(text)
    except UsageError as e:
        assert "--force-promote" in str(e)
        return
    assert reason and len(reason) <= ov.MAX_REASON_CHARS and "\n" not in reason and reason == reason.strip()


def test_a_secret_in_a_reason_is_not_recorded() -> None:
    reason = ov.check_reason("approved, token ya29.a0AfH6SMBxxxxxxxxxxxxxxxxxxxxxxxx")
    assert "ya29." not in reason and "[redacted]" in reason


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_a_verdict_is_one_of_three_or_nothing(text: str) -> None:
    try:
        verdict = ov.check_verdict(text)
    except UsageError as e:
        assert "promote, hold, reject" in str(e)
        return
    assert verdict in ("", *ov.VERDICTS)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=500), st.sampled_from(["hold", "reject", "promote", "none"]), st.text(max_size=120))
def test_labels_keep_label_rules(reason: str, verdict: str, identity: str) -> None:
    try:
        reason = ov.check_reason(reason)
    except UsageError:
        return
    override = ov.Override(reason, verdict, identity, "2026-12-07T06:00:00Z")
    record = PromotionRecord("promoted", "run-1", "42", "7", {}, (), override.labels()["verdict"],
                             override.labels()["by"])
    labels = record_labels(record)
    assert all(LABEL_VALUE.match(v) for v in labels.values()), labels
    assert read_record(labels) == record
    assert all(LABEL_VALUE.match(v) for v in override.labels().values())


def test_a_hold_without_an_override_refuses_and_with_one_is_logged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from tune2serve.components import logs

    forced, refusal = ov.decide("hold", "", LOCAL, endpoint="e", model="m", run_id="r")
    assert forced is None and "verdict is hold" in refusal
    assert ov.decide("promote", "", LOCAL, endpoint="e", model="m", run_id="r") == (None, "")
    assert ov.decide("", "", LOCAL, endpoint="e", model="m", run_id="r") == (None, "")
    monkeypatch.setenv("TUNE2SERVE_LOG_FORMAT", "json")
    stream = io.StringIO()
    logs.configure(stream=stream)
    try:
        forced, refusal = ov.decide("Reject", "the judge is being replaced", LOCAL, endpoint="e", model="m",
                                    run_id="run-9")
    finally:
        logging.getLogger("tune2serve").handlers.clear()
    assert refusal == "" and forced is not None
    assert (forced.overridden_verdict, forced.identity) == ("reject", ov.LOCAL_IDENTITY)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["promotion.forced"]
    assert lines[0]["severity"] == "WARNING"
    assert {k: lines[0][k] for k in ("reason", "overridden_verdict", "identity", "run_id")} == {
        "reason": "the judge is being replaced", "overridden_verdict": "reject", "identity": ov.LOCAL_IDENTITY,
        "run_id": "run-9"}
    none_given, _ = ov.decide("", "first promotion, no eval set yet", LOCAL, endpoint="e", model="m", run_id="r")
    assert none_given is not None and none_given.overridden_verdict == ov.NOT_EVALUATED


def _service_account_file(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": pem,
        "client_email": "promoter@p.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token"}))
    return path


def test_the_identity_is_the_credentials_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through google.auth.default, as the step resolves credentials; no network: both
    files name their account without a refresh."""
    assert ov.caller_identity(LOCAL) == ov.LOCAL_IDENTITY
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_service_account_file(tmp_path / "sa.json")))
    assert ov.caller_identity(CLOUD) == "promoter@p.iam.gserviceaccount.com"
    user = tmp_path / "adc.json"
    user.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                                "refresh_token": "r", "account": "alice@example.com"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(user))
    assert ov.caller_identity(CLOUD) == "alice@example.com"


def test_the_run_labels_name_the_reason_and_who_submitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ov.run_labels("", LOCAL) == {}
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_service_account_file(tmp_path / "sa.json")))
    labels = ov.run_labels("Eval set is stale (ticket 9)", CLOUD)
    assert labels == {ov.RUN_REASON_LABEL: "eval-set-is-stale--ticket-9-",
                      ov.RUN_BY_LABEL: "promoter-p-iam-gserviceaccount-com"}
    with pytest.raises(UsageError, match="parameter force_promote"):
        ov.run_labels("\x00", CLOUD)


def test_a_submitted_run_carries_the_override_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What submit sends, built without sending (prepare): the job's labels."""
    from tune2serve.pipelines.submit import prepare

    monkeypatch.setenv("TUNE2SERVE_VERTEX_API_ENDPOINT", "http://127.0.0.1:9")
    root = Path(__file__).resolve().parents[2]
    submission = prepare(project="p", region="us-central1", template_path=root / "compiled" / "promote_checkpoint.yaml",
                         pipeline_root="gs://b/root", params={"source": "gs://b/s", "export_dest": "gs://b/e",
                                                              "force_promote": "accepted regression"})
    labels = submission.run_spec.labels
    assert labels[ov.RUN_REASON_LABEL] == "accepted-regression"
    assert labels[ov.RUN_BY_LABEL] == "anonymous--local-stack--no-credentials-"


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_the_promotion_record_keeps_the_override(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from tune2serve.components.promotion_record.promotion_record import read_promotion_record, record_after_verify

    export = f"gs://{request.getfixturevalue('gcs_bucket')}/exports/run-1" if where == "gcs" \
        else str(tmp_path / "exports" / "run-1")
    override = {"reason": "r", "overridden_verdict": "hold", "identity": "a@b", "time": "2026-12-07T06:00:00Z"}
    record_after_verify(export, endpoint="e", model="m", outcome="promoted", override=json.dumps(override))
    kept = read_promotion_record(export)
    assert kept is not None and kept.override == override
    record_after_verify(export, endpoint="e", model="m", outcome="promoted", override="not json")
    kept = read_promotion_record(export)
    assert kept is not None and kept.override == {"unparsed": "not json"}
    record_after_verify(export, endpoint="e", model="m", outcome="promoted")
    kept = read_promotion_record(export)
    assert kept is not None and kept.override is None


def test_a_hold_refuses_through_the_cli_before_any_call(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Vertex at a closed port: a refusal that called anything would fail otherwise."""
    from tune2serve.cli.main import main

    monkeypatch.setenv("TUNE2SERVE_VERTEX_API_ENDPOINT", "http://127.0.0.1:9")
    try:
        code = main(["verify-traffic", "projects/p/locations/us-central1/endpoints/1", "--project", "p",
                     "--region", "us-central1", "--model", "projects/p/locations/us-central1/models/2",
                     "--quality-verdict", "reject", "--json"])
        assert code == 1
        out = json.loads(capsys.readouterr().out)
        assert out["outcome"] == "failed" and "verdict is reject" in out["evidence"]["reason"]
        bad = main(["verify-traffic", "1", "--project", "p", "--region", "us-central1", "--model", "2",
                    "--force-promote", "  "])
        assert bad == 2 and "give the reason" in capsys.readouterr().err
    finally:
        logging.getLogger("tune2serve").handlers.clear()
