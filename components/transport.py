"""Which exceptions mean "the service could not be reached": the real transport exception
classes of the HTTP stacks our clients run on, so a dropped connection or a timeout is
told from a bad request by type, never by an exception's class name.

- the builtins ``ConnectionError`` (refused, reset, ``http.client.RemoteDisconnected``)
  and ``TimeoutError`` (``socket.timeout``);
- requests (google-auth's and google-cloud-storage's transport, the SDK's REST
  transport): ``ConnectionError`` and ``Timeout`` — but not ``SSLError``, a certificate
  problem that retrying cannot fix;
- urllib3 under it: ``ProtocolError`` (a connection dropped mid-answer) and its
  ``TimeoutError`` (``NewConnectionError`` included);
- httpx (our own REST calls): ``NetworkError`` (connect, read, write: refused or reset),
  ``TimeoutException``, ``RemoteProtocolError`` (the server closed the connection
  without answering);
- ``google.auth.exceptions.TransportError``: credentials could not be refreshed for want
  of a connection.

Both translators use it: Vertex AI's (``vertex/errors.py``) and Cloud Storage's
(``checkpoint/storage.py``).
"""

from __future__ import annotations

from functools import cache


@cache
def transport_errors() -> tuple[type[BaseException], ...]:
    """The exception classes of an unreachable service (imported on first use: the
    libraries are heavy, and a step that lacks one cannot raise its errors)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import requests

        found += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:
        pass
    try:
        import urllib3

        found += [urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError]
    except ImportError:
        pass
    try:
        import httpx

        found += [httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError]
    except ImportError:
        pass
    try:
        import google.auth.exceptions

        found.append(google.auth.exceptions.TransportError)
    except ImportError:
        pass
    return tuple(found)


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the service could not be reached (worth a retry)."""
    if _is_certificate_error(error):
        return False
    return isinstance(error, transport_errors())


def _is_certificate_error(error: BaseException) -> bool:
    try:
        import requests
    except ImportError:
        return False
    return isinstance(error, requests.exceptions.SSLError)


__all__ = ["is_unreachable", "transport_errors"]
