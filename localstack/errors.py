"""The local stack's own errors: its processes did not start or did not answer. The
emulator is a product of its own, so they are not tune2serve's ``PromotionError`` (the
steps never see them); they subclass ``RuntimeError``, which the CLI's ``local`` verb and
the main job catch.

``LenientJsonError`` is a request the emulator refuses to read (a ``ValueError``), turned
into the 400 it answers. The other error type of the local stack is ``api_errors.ApiError``: not a failure of the
emulator but the Vertex-shaped error it *answers* with (HTTP status + google.rpc body),
so it stays with the API surface that renders it.
"""

from __future__ import annotations


class LocalStackError(RuntimeError):
    """Root of the local stack's own errors."""


class StackError(LocalStackError):
    """A stack process did not start or did not answer; the message says which and where its log is."""


class ReplicaStartError(LocalStackError):
    """A model server did not become healthy; the message quotes its log's tail."""


class LenientJsonError(ValueError):
    """A request body Google's front end would refuse to read (``lenient_json``): the
    parser's message, then the text around the place and a caret. ``protos.parse`` and the
    data plane answer it as 400 INVALID_ARGUMENT ("Invalid JSON payload received. …")."""


__all__ = ["LenientJsonError", "LocalStackError", "ReplicaStartError", "StackError"]
