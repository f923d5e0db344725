"""The local certificate authority for the HTTPS data plane.

The SDK calls ``https://{dedicatedEndpointDns}/v1/...`` for dedicated endpoints, so the
local data plane must speak TLS with a certificate the caller trusts. ``up`` makes a CA
once (``HOME/tls/ca.pem``) and a server certificate for ``127.0.0.1`` and ``localhost``
signed by it; ``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` name the CA. Both are kept across
restarts so an exported environment stays valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def tls_files(home: Path) -> TlsFiles:
    d = home / "tls"
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server-key.pem")


def ensure_tls(home: Path) -> TlsFiles:
    """Creates the CA and the server certificate unless both already exist."""
    files = tls_files(home)
    if files.ca_cert.is_file() and files.server_cert.is_file() and files.server_key.is_file():
        return files
    import trustme

    files.ca_cert.parent.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="tune2serve local stack")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(files.ca_cert))
    cert.private_key_pem.write_to_path(str(files.server_key))
    files.server_key.chmod(0o600)
    # The chain file: leaf then CA, as uvicorn's ssl_certfile expects.
    with open(files.server_cert, "wb") as fh:
        for blob in cert.cert_chain_pems:
            fh.write(blob.bytes())
    return files
