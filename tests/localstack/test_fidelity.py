"""The local Vertex server's answers have the shapes the real API gives (no servers
started here; the stack tests in tests/sdk_corpus/ go through the SDK): proto3 JSON
without default-valued fields, dedicated / PSC / shared endpoints as the docs show them,
Vertex's refusal of shared-host predictions, Resource Manager's project, pipeline
parameter types checked at create."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, strategies as st

from tune2serve.localstack import projects, protos, resources as res
from tune2serve.localstack.api_errors import ApiError
from tune2serve.localstack.pipeline_jobs import check_pipeline_job, parameter_type_problem

EP = "projects/p/locations/us-central1/endpoints/123"


def test_rest_json_leaves_default_valued_fields_out_as_the_real_api_does() -> None:
    stored = {"name": EP, "displayName": "", "trafficSplit": {"7": 100}, "labels": {},
              "deployedModels": [{"id": "7", "model": "projects/p/locations/us-central1/models/9",
                                  "dedicatedResources": {"machineSpec": {"machineType": "n1-standard-4",
                                                                         "acceleratorCount": 0},
                                                         "minReplicaCount": 1, "maxReplicaCount": 1}}]}
    assert protos.render("v1", "Endpoint", stored, int_enums=True) == {
        "name": EP, "trafficSplit": {"7": 100},
        "deployedModels": [{"id": "7", "model": "projects/p/locations/us-central1/models/9",
                            "dedicatedResources": {"machineSpec": {"machineType": "n1-standard-4"},
                                                   "minReplicaCount": 1, "maxReplicaCount": 1}}]}
    # what the server's own code reads from a request keeps every field
    assert protos.to_dict(protos.parse("v1", "Endpoint", b"{}"))["trafficSplit"] == {}


def test_a_dedicated_endpoint_has_its_dns_and_refuses_the_shared_host() -> None:
    ep = res.endpoint_access({"name": EP}, "127.0.0.1:8443", dedicated=True)
    assert ep == {"name": EP, "dedicatedEndpointEnabled": True, "dedicatedEndpointDns": "127.0.0.1:8443"}
    refusal = res.shared_host_refusal(ep)
    assert refusal is not None
    assert (refusal.status, refusal.http_status) == ("FAILED_PRECONDITION", 400)
    assert refusal.message == ("This endpoint is a dedicated endpoint via CloudESF and cannot be accessed through "
                               "the Vertex AI API. Please access the endpoint using its dedicated dns name "
                               "'127.0.0.1:8443'")


def test_a_psc_endpoint_is_shaped_as_the_docs_show_it() -> None:
    psc = {"enablePrivateServiceConnect": True, "projectAllowlist": ["p"]}
    ep = res.endpoint_access({"name": EP, "privateServiceConnectConfig": psc}, "127.0.0.1:8443", dedicated=True)
    assert ep == {"name": EP, "privateServiceConnectConfig": psc}  # no dedicatedEndpointDns
    dm = res.with_private_endpoint({"id": "7", "model": "m"}, ep)
    assert dm == {"id": "7", "model": "m", "privateEndpoints": {
        "serviceAttachment": "projects/p-tp/regions/us-central1/serviceAttachments/local-7"}}
    assert res.shared_host_refusal(ep).status == "FAILED_PRECONDITION"  # type: ignore[union-attr]
    rendered = protos.render("v1beta1", "Endpoint", {**ep, "deployedModels": [dm]}, int_enums=False)
    assert rendered["deployedModels"][0]["privateEndpoints"] == dm["privateEndpoints"]
    assert "dedicatedEndpointDns" not in rendered


def test_a_shared_public_endpoint_is_served_at_the_shared_host() -> None:
    ep = res.endpoint_access({"name": EP, "dedicatedEndpointDns": "stale"}, "127.0.0.1:8443", dedicated=False)
    assert ep == {"name": EP}
    assert res.shared_host_refusal(ep) is None
    assert res.with_private_endpoint({"id": "7"}, ep) == {"id": "7"}


def test_resource_manager_answers_the_stacks_one_project_number() -> None:
    assert projects.get_project("projects/my-project", "local-project") == {
        "name": "projects/0", "projectId": "my-project", "state": "ACTIVE", "displayName": "my-project"}
    assert projects.get_project("projects/0", "local-project")["projectId"] == "local-project"
    with pytest.raises(ApiError) as err:
        projects.get_project("projects/123", "local-project")
    assert err.value.status == "PERMISSION_DENIED"
    from google.cloud import resourcemanager_v3

    parsed = resourcemanager_v3.Project.from_json(json.dumps(projects.get_project("projects/x-1", "local-project")))
    assert (parsed.name, parsed.project_id, parsed.state.name) == ("projects/0", "x-1", "ACTIVE")


def test_the_credentials_file_refreshes_against_the_local_token_url(tmp_path, monkeypatch) -> None:
    """google.auth.default() on the file `local run` writes, refreshed against a real
    loopback server answering as the local Vertex server's token route does."""
    import http.server
    import threading

    import google.auth
    import google.auth.transport.requests

    seen: list[str] = []

    class Token(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps(projects.token_response()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = tmp_path / "credentials.json"
        path.write_text(json.dumps(projects.credentials_file(f"http://127.0.0.1:{server.server_port}")))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "local-project")
        creds, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        creds.refresh(google.auth.transport.requests.Request())
    finally:
        server.shutdown()
        server.server_close()
    assert (creds.token, project, seen) == (projects.LOCAL_TOKEN, "local-project", ["/_local/oauth2/token"])


# -------------------------------------------------------------- pipeline parameter types
KINDS = {"NUMBER_INTEGER": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer(),
         "NUMBER_DOUBLE": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
         "STRING": lambda v: isinstance(v, str), "BOOLEAN": lambda v: isinstance(v, bool),
         "LIST": lambda v: isinstance(v, list), "STRUCT": lambda v: isinstance(v, dict)}
values = st.recursive(st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
                      | st.text(max_size=5), lambda inner: st.lists(inner, max_size=2)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=4)


@given(st.sampled_from(sorted(KINDS)), values)
def test_a_parameter_value_is_accepted_exactly_when_it_is_of_the_declared_type(kind: str, value: Any) -> None:
    as_sent = json.loads(json.dumps(value))
    assert (parameter_type_problem(kind, as_sent) is None) == KINDS[kind](as_sent)


def test_a_string_for_an_integer_parameter_is_refused_at_create() -> None:
    spec = {"root": {"inputDefinitions": {"parameters": {"n": {"parameterType": "NUMBER_INTEGER",
                                                                  "defaultValue": 3.0}}}}}
    job = {"pipelineSpec": spec, "runtimeConfig": {"gcsOutputDirectory": "gs://b/r", "parameterValues": {"n": "10"}}}
    with pytest.raises(ApiError) as err:
        check_pipeline_job(job)
    assert (err.value.status, err.value.message) == (
        "INVALID_ARGUMENT", "The value of pipeline parameter 'n' does not match its type in the pipeline spec: "
        "NUMBER_INTEGER needs an integer, got \"10\".")
    job["runtimeConfig"]["parameterValues"]["n"] = 10.0  # an integer, as JSON (a protobuf Value) carries it
    check_pipeline_job(job)
