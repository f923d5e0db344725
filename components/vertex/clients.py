"""Client set-up for Vertex AI, in the cloud or on the local stack.

The steps never know which stack they talk to. With ``TUNE2SERVE_VERTEX_API_ENDPOINT``
set (``tune2serve local env`` prints it), the SDK is pointed at that endpoint with REST
transport and anonymous credentials, and the data plane's TLS is verified against
``REQUESTS_CA_BUNDLE`` (the local CA). Unset, Application Default Credentials and the
real regional endpoint are used. Nothing is read at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

API_ENDPOINT_ENV = "TUNE2SERVE_VERTEX_API_ENDPOINT"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class VertexTarget:
    """Where Vertex AI calls go: a project and region, and the API endpoint override
    (the local stack) or None for the real service."""

    project: str
    region: str
    api_endpoint: str | None = None

    @property
    def is_local(self) -> bool:
        return self.api_endpoint is not None

    @property
    def rest_base_url(self) -> str:
        """Base URL of the control-plane REST API (no trailing slash, no version)."""
        if self.api_endpoint:
            endpoint = self.api_endpoint.rstrip("/")
            return endpoint if "://" in endpoint else f"https://{endpoint}"
        return f"https://{self.region}-aiplatform.googleapis.com"

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"


def target(project: str, region: str) -> VertexTarget:
    """The target for ``project``/``region`` under the current environment."""
    from tune2serve.components.errors import UsageError

    if not project:
        raise UsageError("a Vertex AI project is required (--project P)")
    if not region:
        raise UsageError("a Vertex AI region is required (--region R)")
    return VertexTarget(project=project, region=region, api_endpoint=os.environ.get(API_ENDPOINT_ENV) or None)


def check_region(region: str) -> None:
    """The SDK's own list of Vertex AI locations, checked before the first request (SDK
    set-up, data-plane client): the same rule on the local stack as in the cloud. A usage error naming --region, not the
    SDK's ValueError (whose message lists every region)."""
    from google.cloud.aiplatform import utils

    try:
        utils.validate_region(region)
    except ValueError as e:
        from tune2serve.components.errors import UsageError

        raise UsageError(f"--region {region!r}: {str(e).split(',')[0].split(' select from')[0]} "
                         "(a Vertex AI region such as us-central1 or europe-west4)") from e


def credentials(vertex: VertexTarget) -> Any:
    """Anonymous credentials on the local stack, else Application Default Credentials."""
    if vertex.is_local:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError as e:
        from tune2serve.components.errors import VertexUserError

        raise VertexUserError(
            "no Google Cloud credentials found (Application Default Credentials): run "
            "'gcloud auth application-default login' (or set GOOGLE_APPLICATION_CREDENTIALS); "
            f"{_local_stack_hint()} ({API_ENDPOINT_ENV} is not set)",
            status_code=401) from e
    return creds


def _local_stack_hint() -> str:
    """How to use the local stack instead: a running one (where ``tune2serve local`` looks
    by default) is named with the exact command; else how to start one. The local stack is
    not in the image: there, only the command is said."""
    try:
        from tune2serve.localstack.hints import local_command, running_home
    except ImportError:
        return "to use the local stack instead, run 'eval \"$(tune2serve local env)\"' first"
    home = running_home()
    if home is not None:
        return (f"a local stack is running in {home}: to use it, run "
                f"'eval \"$({local_command('env', home)})\"' first")
    return (f"to use the local stack instead, run '{local_command('up')}', then "
            f"'eval \"$({local_command('env')})\"'")


def init_sdk(vertex: VertexTarget) -> None:
    """``vertexai.init`` / ``aiplatform.init`` for the target. Idempotent."""
    import vertexai
    from google.cloud import aiplatform

    check_region(vertex.region)
    where = {"project": vertex.project, "location": vertex.region}
    # Credentials resolved here, not lazily by the SDK at its first call, so that missing
    # ones are one clear error (``credentials``) instead of a traceback from deep inside it.
    how: dict[str, Any] = {"credentials": credentials(vertex)}
    if vertex.is_local:
        how.update(api_endpoint=vertex.api_endpoint, api_transport="rest")
    vertexai.init(**where, **how)
    aiplatform.init(**where, **how)


def job_service_client(vertex: VertexTarget) -> Any:
    """The SDK's ``JobServiceClient`` (customJobs) for the target: REST to the local stack,
    the regional endpoint in the cloud, with ``credentials``. GCPC's custom-job launcher
    makes the same client with the regional endpoint fixed; this one can be pointed."""
    from google.cloud.aiplatform_v1.services.job_service import JobServiceClient

    check_region(vertex.region)
    if vertex.is_local:
        return JobServiceClient(credentials=credentials(vertex), transport="rest",
                                client_options={"api_endpoint": vertex.api_endpoint})
    return JobServiceClient(credentials=credentials(vertex),
                            client_options={"api_endpoint": f"{vertex.region}-aiplatform.googleapis.com"})


def access_token(vertex: VertexTarget) -> str | None:
    """A bearer token for data-plane calls, or None on the local stack. Never log it."""
    if vertex.is_local:
        return None
    import google.auth.transport.requests

    creds = credentials(vertex)
    creds.refresh(google.auth.transport.requests.Request())
    return str(creds.token)


def tls_verify() -> Any:
    """What httpx verifies TLS against: an SSL context on the CA bundle the environment
    names (the local CA on the local stack), else True (the system store). Verification
    is never turned off."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if not bundle:
        return True
    import ssl

    return ssl.create_default_context(cafile=bundle)


def http_client(vertex: VertexTarget, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """An ``httpx.Client`` with the bearer token (if any), TLS verification and a timeout
    on every request. Callers close it (use it as a context manager)."""
    import httpx

    check_region(vertex.region)
    headers = {"User-Agent": "tune2serve"}
    token = access_token(vertex)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(headers=headers, verify=tls_verify(), timeout=httpx.Timeout(timeout_s, connect=10.0))
